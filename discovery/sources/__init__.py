"""Discovery sources: each lists the declarations it sees now, or raises SourceError."""
