"""Stages 5-6, the evaluation (notebooks 05-06): training sets and downstream models as cached
jobs, and the tables (`evaluation`), the training budget checked on val (`budget`), the
Distribution Matching baseline (`dm`), paired comparisons with intervals (`comparisons`), the
ablations (`ablations`) and the figures (`figures`)."""
