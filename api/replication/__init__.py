"""The server side of sync: the change log, pull and push for terminals, and (later) the mini-program."""
