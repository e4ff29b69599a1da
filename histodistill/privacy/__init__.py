"""Stage 7, the privacy audit (notebook 07): the distance tests (`measures`, `copying`), the
membership attacks (`membership`, `generator_attack`), the audited sets and their controls
(`controls`), the audit as one cached stage (`audit`), the verdict and data card (`report`) and
the figures (`figures`)."""
