"""Stages 5-6, the evaluation (notebooks 05-06): what each model trains on (`training_sets`,
with the Distribution Matching baseline's cached stage; its algorithm: `dm`), the downstream
models as cached jobs and the main table's rows (`evaluation`), the training budget checked on
val (`budget`), the tables (`tables`), paired comparisons with intervals (`comparisons`), the
ablations (`ablations`) and the figures (`figures`)."""
