"""Notifications: kept per person, listable, marked read, and announced live after their commit."""
