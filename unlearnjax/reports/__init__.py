"""The studies' reports: figures (PNG) and Markdown tables from results rows.

`base` holds what every report shares (mean ± std over seeds with the seed
count, Markdown tables, figures saved with a Markdown twin, method labels
from the registry, the `Report` that writes `report.md`, and `rebuild_main`
for `python -m ... --workdir=DIR`); each study's module holds only its own
tables and figures: `corrective` (Goel et al.), `potion` (Schoepf et al.),
`poison_fails` (Pawelczyk et al.), `reload` (RELOAD), `pgu` (Hoang et al.)
and `why_fails` (Pawelczyk et al. §6). The old `unlearnjax/report.py` and
`report_<study>.py` re-export the first five (and keep their `python -m`
commands).
"""
