"""`masklet batch`: label a whole dataset of videos with a pool of model-holding workers.

The manifest (`manifest`) lists videos with prompts or automatic-mask options; the runner
(`runner`) hands them to Ray actors one at a time; `work` tracks one video exactly as
`masklet video` / `masklet auto-video` would; `results` keeps the append-only log that
makes a rerun skip what is done. Ray is imported only by `runner` (extra `masklet[batch]`).
"""

from masklet.batch.manifest import Job, ManifestError, read_manifest
from masklet.batch.results import RESULTS_NAME, ResultsLog, sweep_partial

__all__ = ["Job", "ManifestError", "RESULTS_NAME", "ResultsLog", "read_manifest",
           "sweep_partial"]
