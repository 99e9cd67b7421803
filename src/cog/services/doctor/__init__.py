"""`cog doctor`: check the database against the store, and repair what is safe to repair.

`check()` compares the image rows with a listing of the store (`images/` and `thumbs/`), reads
every original to compare its sha256 with the one recorded at upload (unless `quick`), and looks
for runs no executor is looking after. It answers a `Report`: one `Finding` per thing found,
each naming its image, run or store key, saying what is wrong and what `repair()` does about it.

`repair()` acts on a report's findings and records on each what it did. What it does, and why:

- A file no image refers to is **moved to `quarantine/<time>/`**, never deleted, and only once
  it is older than the grace period (an hour by default). An upload writes its files before it
  commits its rows, so a young file may belong to a row about to appear; and an old one may be
  the only copy of an image whose row was lost (a database restored from an older backup), which
  a delete could not give back. Quarantined files cost space until a person removes them.
- A thumbnail of no image is deleted (after the same grace period): it is made from an original
  and can always be made again.
- An image whose file is gone keeps its row unless `drop_missing` is asked for: the row is what
  tells the person which image was lost (its prompt, provenance, series), and the file may come
  back from a backup. With `drop_missing` the row goes only after the store confirms once more
  that the file is missing; none goes when every image's file is missing, which is what a wrong
  `COG_STORAGE_URL` looks like. An image row whose file exists is never deleted.
- A file whose bytes no longer match the recorded sha256 (or size) is left as it is, row and
  bytes: Cog cannot restore the original, and taking the new hash would hide the damage. It stays
  in the report until the file is restored from a backup or the image deleted.
- A missing, damaged or outdated thumbnail (made for another `COG_THUMBNAIL_PX`) is made again.
  Pages make one on first view too, so these are notices, not problems.
- Runs are recovered with the executors' own code (`cog.engine.recovery`): a run left running by
  a process that stopped is queued again to resume from its last finished step, or failed once
  it has been started `COG_RUN_MAX_ATTEMPTS` times. With `COG_EXECUTOR=queue`, queued runs that
  no queue job will bring to a worker get a new job, as a worker's upkeep does.
"""

from cog.services.doctor.check import check
from cog.services.doctor.repair import repair
from cog.services.doctor.report import (
    DEFAULT_GRACE,
    Finding,
    Kind,
    Options,
    Outcome,
    Progress,
    Report,
)

__all__ = [
    "DEFAULT_GRACE",
    "Finding",
    "Kind",
    "Options",
    "Outcome",
    "Progress",
    "Report",
    "check",
    "repair",
]
