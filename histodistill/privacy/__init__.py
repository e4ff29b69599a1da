"""Stage 7, the privacy audit (notebook 07): the statistics of each test (`measures`), the
audit as one cached stage (`audit`) and its figures (`figures`)."""
