"""Village-clinic terminals: enrolment codes, terminal identity and the client assertions of /sync."""
