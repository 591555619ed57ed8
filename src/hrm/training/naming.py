"""The original's run naming: project from the dataset folder, run from the architecture plus a slug.

The original draws the slug from the `coolname` package; a pair of words from two short lists gives the
same kind of memorable name without the dependency.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

_ADJECTIVES = (
    "amber",
    "bold",
    "brave",
    "bright",
    "calm",
    "clever",
    "cosmic",
    "crimson",
    "daring",
    "eager",
    "fancy",
    "fearless",
    "gentle",
    "golden",
    "grand",
    "happy",
    "hidden",
    "humble",
    "icy",
    "jolly",
    "keen",
    "lively",
    "lucky",
    "mellow",
    "merry",
    "misty",
    "noble",
    "polite",
    "proud",
    "quick",
    "quiet",
    "rapid",
    "royal",
    "rustic",
    "shiny",
    "silent",
    "silver",
    "smart",
    "snowy",
    "solar",
    "steady",
    "swift",
    "tidy",
    "vivid",
    "warm",
    "wise",
    "witty",
    "zesty",
)
_NOUNS = (
    "albatross",
    "badger",
    "beaver",
    "bison",
    "cheetah",
    "condor",
    "coyote",
    "crane",
    "dolphin",
    "eagle",
    "falcon",
    "ferret",
    "gazelle",
    "gecko",
    "heron",
    "ibex",
    "jackal",
    "jaguar",
    "kestrel",
    "koala",
    "lemur",
    "leopard",
    "lynx",
    "marmot",
    "meerkat",
    "mongoose",
    "narwhal",
    "ocelot",
    "otter",
    "owl",
    "panda",
    "panther",
    "pelican",
    "penguin",
    "puffin",
    "quail",
    "raven",
    "salmon",
    "seal",
    "sparrow",
    "stork",
    "swan",
    "tapir",
    "tiger",
    "toucan",
    "walrus",
    "wolf",
    "yak",
    "zebra",
)


def random_slug(rng: random.Random | None = None) -> str:
    """A two-word name such as `swift-otter` (the original's `coolname.generate_slug(2)`)."""
    rng = rng or random.SystemRandom()
    return f"{rng.choice(_ADJECTIVES)}-{rng.choice(_NOUNS)}"


def default_project_name(data_path: str) -> str:
    return f"{os.path.basename(os.path.normpath(data_path)).capitalize()} ACT-torch"


def default_run_name(arch_name: str, rng: random.Random | None = None) -> str:
    return f"{arch_name.split('@')[-1]} {random_slug(rng)}"


def default_checkpoint_path(project_name: str, run_name: str) -> str:
    return str(Path("checkpoints") / project_name / run_name)
