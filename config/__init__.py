"""Settings schema and loading: the bottom of the config <- discovery <- daemon stack."""
