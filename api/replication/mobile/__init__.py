"""The mini-program's replication, in the shape RxDB's GraphQL replication plugin expects (issue 12)."""
