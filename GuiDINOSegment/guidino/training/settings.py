"""Training settings and the refine defaults, declared once (no torch: the Slicer panels read them).

``TrainConfig`` drives one training run (``trainer.train``). ``RefineSettings`` are a refine round's
choices; its training part is built from them (``RefineSettings.train_config``), never copied.
"""

from dataclasses import dataclass, field, fields
from typing import Optional

from ..arguments import positive_number, time_limit, whole_number
from ..errors import InputError

PARTS = ("tokenbook", "network", "lora")
PLACEMENTS = ("ends", "interior")  # where the spread protocol puts its slices (``protocols.spread_slices``)
ROBOTS = ("largest-error", "suggested")  # how the robot user picks the slice it corrects next (``protocols.simulate``)


@dataclass
class TrainConfig:
    epochs: int = 100
    steps: Optional[int] = None  # total optimiser steps; overrides epochs
    batch_size: int = 4
    optimizer: str = "adamw"  # adamw | sgd (Nesterov, momentum 0.99)
    lr: Optional[float] = None  # default 1e-4 (AdamW) or 1e-2 (SGD)
    lora_lr: float = 5e-4
    weight_decay: Optional[float] = None  # default 1e-4 (AdamW) or 3e-5 (SGD)
    poly_power: float = 0.9
    guide_weight: float = 0.1
    boundary_weight: float = 0.0
    augment: bool = True
    photometric: bool = True  # augmentation changes intensities too (brightness/contrast, noise, blur)
    parts: tuple = PARTS  # what learns: any of tokenbook, network, lora
    seed: int = 0
    device: str = "auto"
    validate_every: int = 0  # steps between validations; 0 = once per epoch
    patience: Optional[int] = None  # stop after this many validations without improvement
    time_budget: Optional[float] = None  # seconds: stop after the step that passes it (validated); the poly
    # schedule follows whichever ends first, the steps or the budget, so a run cut by the clock ends annealed
    min_steps: int = 0  # the clock stops a run only after this many steps (a slow machine takes longer instead)
    cache_guide: bool = True  # frozen guide: compute its tokens once per image

    def __post_init__(self):
        if self.optimizer not in ("adamw", "sgd"):
            raise InputError(f"unknown optimizer {self.optimizer!r}: use adamw or sgd")
        check_parts(self.parts)
        self.epochs = whole_number(self.epochs, "epochs")
        self.steps = None if self.steps is None else whole_number(self.steps, "steps")
        self.batch_size = whole_number(self.batch_size, "batch size")
        self.lr = None if self.lr is None else positive_number(self.lr, "learning rate")
        self.lora_lr = positive_number(self.lora_lr, "LoRA learning rate")
        self.validate_every = whole_number(self.validate_every, "validate every", minimum=0)
        self.patience = None if self.patience is None else whole_number(self.patience, "patience")
        self.time_budget = time_limit(self.time_budget, "time budget")
        self.min_steps = whole_number(self.min_steps, "minimum steps", minimum=0)


def check_parts(parts):
    """The parts to train: a non-empty subset of PARTS."""
    unknown = set(parts) - set(PARTS)
    if unknown or not parts:
        raise InputError(f"parts to train must be among {', '.join(PARTS)}; got {sorted(parts)}")
    return tuple(parts)


# ModelConfig settings of a model refined from nothing (no bundle yet). It sees crops of the evidence region
# (guidino.corrections), so it needs a smaller input than whole slices: 128 px trains about 3x as many steps
# in the time budget as 256 px (2 CPU cores, 20 s: brain1 from 3 slices 135 vs 48 steps; MNI white matter
# from 3 spread slices 114 vs 35 steps, Dice on the other slices 0.92 vs 0.00).
DEFAULT_NEW_MODEL = {"input_size": 128}
# Seconds of training per refine round: a whole round (training, held-out check, re-segmenting a
# small volume) then stays within about 30 s on a 2-core CPU; on a GPU the steps end long before.
REFINE_TIME_BUDGET = 20.0


@dataclass
class RefineSettings:
    """A refine round's settings; fields named as TrainConfig's are its training settings."""

    train: str = "tokenbook+network"  # parts joined by '+': tokenbook, network, lora
    lora: bool = False  # add LoRA adapters to the guide (when the model has none) and train them
    # Two slices a step: the clock, not the steps, ends a round on a 2-core CPU, and more updates learn more
    # there than bigger batches (MNI white matter from 3 spread slices, 60 steps: Dice 0.81 on the other slices
    # at 2 a step, 0.35 at 3; BENCHMARKS section 3). Where the steps end first (a GPU), 250 steps see each of a
    # handful of corrected slices about a hundred times.
    steps: int = 250
    time_budget: Optional[float] = REFINE_TIME_BUDGET  # seconds of training; None: until ``steps``
    # A model from nothing finds nothing before about 50 steps (brain1, 3 spread slices, steps fixed: 40 steps
    # Dice 0.00 on the other slices, 60 steps 0.73): on a slow or busy CPU the round takes longer rather than
    # return an empty segment.
    min_steps: int = 60
    batch_size: int = 2
    lr: float = 1e-3
    lora_lr: float = 5e-4
    augment: bool = True
    # The corrected slices and the slices segmented next come from one volume: its intensities do not change,
    # and they are what tells tissues apart (MNI white matter against grey matter: photometric augmentation
    # made a round-2 model label grey matter white, see BENCHMARKS section 3). Shapes still vary.
    photometric: bool = False
    device: str = "auto"
    seed: int = 0
    # Slices beside a corrected one (within this many, between two corrected slices holding the structure) are
    # trained on too, labelled where the shape interpolated between the corrections surely holds the structure and
    # unlabelled elsewhere (``refine.interpolated_neighbours``), the corrected slices drawn ``corrected_weight``
    # times as often. Off by default (0): with slices placed as a user places them it meets every interior target
    # (the MR pancreas from 3 slices +0.04), but with slices at the structure's ends brain1 from 3 slices falls
    # behind Fill between slices (−0.30), breast1 loses 0.13 and the MNI white matter 0.10, and not for wrong
    # labels: neighbours with nothing labelled hurt more (BENCHMARKS section 3, per case with and without).
    interpolated_reach: int = 0
    corrected_weight: int = 4
    keep_on_cancel: bool = True  # cancelled: keep the model as trained so far (True) or discard the round (False)
    new_model: dict = field(default_factory=lambda: dict(DEFAULT_NEW_MODEL))  # ModelConfig of a model made from nothing

    def __post_init__(self):
        check_parts(self.parts())
        self.steps = whole_number(self.steps, "steps")
        self.batch_size = whole_number(self.batch_size, "batch size")
        self.lr = positive_number(self.lr, "learning rate")
        self.lora_lr = positive_number(self.lora_lr, "LoRA learning rate")
        self.time_budget = time_limit(self.time_budget, "time budget")
        self.min_steps = whole_number(self.min_steps, "minimum steps", minimum=0)
        self.interpolated_reach = whole_number(self.interpolated_reach, "interpolated reach", minimum=0)
        self.corrected_weight = whole_number(self.corrected_weight, "corrected weight")

    def parts(self):
        parts = tuple(p.strip() for p in self.train.split("+") if p.strip())
        return parts + ("lora",) if self.lora and "lora" not in parts else parts

    def train_config(self, **changes):
        """This round's TrainConfig: the TrainConfig fields these settings have, the parts, then ``changes``."""
        shared = {f.name: getattr(self, f.name) for f in fields(TrainConfig) if f.name in self.__dataclass_fields__}
        return TrainConfig(**{**shared, "parts": self.parts(), **changes})
