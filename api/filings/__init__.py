"""Online filings (网上办): kinds, workflow, reviewers, attachments. Rules in service.py."""
