"""Pure parsers, one per vendor dialect: request data in, CanonicalEvent out. No Flask here."""
