"""One training loop for the teacher and for distillation into the student.

Read top to bottom: config -> data -> model and objective -> optimiser and schedule -> loop
(step, log, validate, checkpoint) -> export. ``retint train`` and ``retint distill`` both call
:func:`fit`; distillation only adds a frozen teacher to the objective (:class:`Objective`).

Runs on CPU, one GPU (bf16 autocast), or many processes under ``torchrun`` (DistributedData
Parallel; rank 0 logs and writes checkpoints).
"""

from __future__ import annotations

import csv
import json
import math
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import Tensor, nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from .augment import age_lightness
from .color import AB_SCALE, model_to_rgb, rgb_to_model
from .data import DeviceCrops, EpochSampler, RandomCrops, center_crops, scan_photos
from .device import cpu_has_bf16, describe_device, pick_device
from .io import atomic_write
from .losses import (
    AB_BINS,
    ELEMENTWISE,
    Adversary,
    FeatureLoss,
    ab_histogram,
    pixel_loss,
    rarity_weights,
)
from .metrics import MetricMeans, ab_metrics, baseline_metrics, cast_metrics, colorfulness
from .models import build_model, check_size, count_parameters, load_weights, save_weights

LOG_FIELDS = [
    "step", "epoch", "seconds", "lr", "train_loss", "train_recon", "train_distill",
    "train_output", "train_feature", "train_adv", "train_disc", "val_loss",
    "val_psnr_ab", "val_ssim_ab", "val_cf_ratio", "val_cast", "val_a_mean", "val_b_mean",
    "val_a_truth", "val_b_truth",
    "base_psnr_ab", "base_ssim_ab",
]
HISTOGRAM_CROPS = 512  # training crops sampled for the ab histogram of rarity weighting


@dataclass
class TrainConfig:
    data: list[str]
    out: str
    arch: str = "teacher"
    width: float = 1.0
    backbone: str | None = None  # frozen pretrained encoder fused into the latent
    pyramid: bool = False  # teacher: also add the encoder's features at every scale
    init: str | None = None  # start from these weights (fine-tuning), not from scratch
    teacher: str | None = None  # a teacher's weights: distil into ``arch`` instead of training
    alpha: float = 0.5  # weight of the reconstruction loss (distillation)
    beta: float = 0.5  # weight of the latent-matching loss (distillation)
    kd_output: float = 0.0  # weight of matching the teacher's ab output (distillation)
    kd_sharpen: float = 1.0  # the teacher's ab is scaled by this (>1: more vivid targets)
    loss: str = "mse"
    rebalance: float = 0.0  # rarity weighting strength in [0, 1]; 0 = off
    feature_weight: float = 0.0  # weight of the perceptual (ImageNet feature) loss; 0 = off
    old_photo: float = 0.0  # share of training crops whose L is aged (grain, blur, fading...)
    # colour hints: > 0 trains hint layers on the frozen teacher ``init`` (models/hinted.py),
    # each crop given a geometric number of points of this mean, simulated from its truth
    hint_points: float = 0.0
    gan_weight: float = 0.0  # weight of the PatchGAN term; 0 = no discriminator
    gan_start: int = 0  # step at which the discriminator joins (pixel-loss pre-training first)
    gan_lr: float = 2e-4
    steps: int = 10_000  # 0 with a time budget: as many as it allows (see lr_factor)
    batch_size: int = 16  # global: split across processes
    crop: int = 128
    max_scale: float = 2.0
    lr: float = 5e-4
    weight_decay: float = 0.01
    warmup: int = 200
    val_fraction: float = 0.1
    val_size: int = 256
    val_every: int = 0  # steps; 0 = once per epoch
    ckpt_every: int = 500
    log_every: int = 10
    seed: int = 0
    workers: int = 2
    # hold the training photos on the device and crop them there (data.DeviceCrops): for a
    # GPU, where loader processes could not keep up; ``workers`` is then unused
    data_on_device: bool = False
    device: str = "auto"
    amp: bool = True  # bf16 autocast on CUDA, and on CPUs with bf16 units (AVX-512 BF16, AMX)
    time_budget: float = 0.0  # seconds of training before a clean stop; 0 = no limit
    resume: bool = False
    tensorboard: bool = False
    progress: bool = True
    extra_card: dict = field(default_factory=dict)


def start_from(model: nn.Module, path: str) -> None:
    """Load ``path``'s weights into ``model`` for fine-tuning. Layers the new model adds on top
    (the pyramid skips, which start at zero) may be missing; nothing else may."""
    start, _ = load_weights(path)
    try:
        missing, unexpected = model.load_state_dict(start.state_dict(), strict=False)
    except RuntimeError as err:  # same names, other shapes (another width)
        raise SystemExit(f"error: the weights of {path} do not fit this model "
                         f"({str(err).splitlines()[-1].strip()})") from err
    missing = [k for k in missing if not k.startswith("skips.")]
    if missing or unexpected:
        raise SystemExit(f"error: the weights of {path} do not fit this model (missing "
                         f"{missing[:3]}, unexpected {unexpected[:3]})")


class Net(nn.Module):
    """What the optimiser trains: the model, plus a 1x1 latent adapter when a narrower student
    is distilled from a wider teacher (FitNets-style), so their latents can be compared."""

    def __init__(self, model: nn.Module, adapter: nn.Module | None = None) -> None:
        super().__init__()
        self.model = model
        self.adapter = adapter

    def forward(self, l: Tensor, with_latent: bool = False,
                hints: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        if hints is not None:  # a hint model (hint training)
            return self.model(l, hints), None
        if not with_latent:
            return self.model(l), None
        ab, z = self.model(l, return_latent=True)
        return ab, (self.adapter(z) if self.adapter is not None else z)


class Objective:
    """The pixel loss of one step: reconstruction (optionally rarity-weighted), or, when a
    frozen teacher is given, ``alpha * recon + beta * latent_mse + kd_output * output_loss``
    (output_loss: to the teacher's ab, scaled by ``kd_sharpen``). Not an ``nn.Module`` on
    purpose: ``.train()`` never reaches the teacher, which stays in eval mode."""

    def __init__(self, cfg: TrainConfig, device: torch.device) -> None:
        if cfg.loss not in ELEMENTWISE:
            raise ValueError(f"unknown loss {cfg.loss!r} (choose from {', '.join(ELEMENTWISE)})")
        self.loss_name = cfg.loss
        self.weights: Tensor | None = None  # rarity weights per ab bin, set by fit()
        self.alpha, self.beta = cfg.alpha, cfg.beta
        self.kd_output, self.kd_sharpen = cfg.kd_output, cfg.kd_sharpen
        self.features = FeatureLoss(device) if cfg.feature_weight > 0 else None
        self.feature_weight = cfg.feature_weight
        self.hint_points = cfg.hint_points
        self.teacher: nn.Module | None = None
        if cfg.teacher and cfg.hint_points > 0:
            raise SystemExit("error: hint training trains hint layers on a frozen teacher (init); "
                             "it does not distil (no teacher)")
        if cfg.teacher:
            self.teacher, _ = load_weights(cfg.teacher, device)
            self.teacher.requires_grad_(False).eval()

    def hints(self, l: Tensor, ab: Tensor, seed: int | None = None) -> Tensor | None:
        """Colour hints simulated from the truth for hint training (else None): from the global
        random stream (replayed by --resume), or with ``seed`` the same ones every time."""
        if self.hint_points <= 0:
            return None
        from .hints import simulate_hints

        if seed is None:
            return simulate_hints(l, ab, self.hint_points)
        generator = torch.Generator().manual_seed(seed)
        return simulate_hints(l.cpu(), ab.cpu(), self.hint_points, generator).to(l.device)

    def recon(self, pred: Tensor, ab: Tensor, weighted: bool = True) -> Tensor:
        return pixel_loss(self.loss_name, pred, ab, self.weights if weighted else None)

    def __call__(self, net: nn.Module, l: Tensor, ab: Tensor, clean_l: Tensor | None = None
                 ) -> tuple[Tensor, dict[str, Tensor], Tensor]:
        """-> (loss, its parts for the log, the predicted ab). ``l`` is the model's input;
        ``clean_l``, the photo's own L where ``l`` was aged, is what colour joins in RGB."""
        if self.teacher is None:
            pred, _ = net(l, hints=self.hints(l if clean_l is None else clean_l, ab))
            parts = {"recon": self.recon(pred, ab)}
            loss = parts["recon"]
            if self.features is not None:
                parts["feature"] = self.features(l if clean_l is None else clean_l, pred, ab)
                loss = loss + self.feature_weight * parts["feature"]
            return loss, parts, pred
        with torch.no_grad():  # one teacher pass; its decoder runs only if its colours are used
            if self.kd_output > 0:
                target_ab, target_latent = self.teacher(l, return_latent=True)
            else:
                target_latent = self.teacher.latent(l)
        pred, latent = net(l, with_latent=True)  # one student pass gives both
        recon = self.recon(pred, ab)
        distill = F.mse_loss(latent.float(), target_latent.float())
        loss = self.alpha * recon + self.beta * distill
        parts = {"recon": recon, "distill": distill}
        if self.kd_output > 0:
            target = (target_ab.float() * self.kd_sharpen).clamp(-1.0, 1.0)
            parts["output"] = self.recon(pred, target)
            loss = loss + self.kd_output * parts["output"]
        return loss, parts, pred


def lr_factor(step: int, cfg: TrainConfig, elapsed: float = 0.0) -> float:
    """Linear warm-up, then cosine decay to 5 %: over the steps, or, for a run of ``steps=0``
    that trains for its time budget, over the seconds (``elapsed`` of them so far)."""
    if step < cfg.warmup:
        return (step + 1) / cfg.warmup
    if cfg.steps == 0:
        progress = min(1.0, elapsed / cfg.time_budget)
    else:
        progress = min(1.0, (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup))
    return 0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * progress))


# ---------------------------------------------------------------- distributed helpers


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


def init_distributed(device_name: str) -> tuple[Dist, torch.device]:
    """Join the torchrun process group if launched by torchrun; pick this process's device."""
    if "RANK" not in os.environ or int(os.environ.get("WORLD_SIZE", "1")) == 1:
        return Dist(), pick_device(device_name)
    d = Dist(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"]))
    device = pick_device(device_name)
    if device.type == "cuda":
        torch.cuda.set_device(d.local_rank)
        device = torch.device("cuda", d.local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return d, device


def parameter_checksum(model: nn.Module) -> float:
    return float(sum(p.detach().double().sum() + p.detach().double().abs().sum()
                     for p in model.parameters()))


# ---------------------------------------------------------------- files of a run


class RunLog:
    """``log.csv`` (one row per log interval or validation), optional TensorBoard, curves PNG."""

    def __init__(self, out: Path, resume_step: int | None, tensorboard: bool) -> None:
        self.path = out / "log.csv"
        rows = []
        if resume_step is not None and self.path.exists():  # drop rows past the checkpoint
            with self.path.open() as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) <= resume_step]
        with self.path.open("w", newline="") as f:
            writer = csv.DictWriter(f, LOG_FIELDS)
            writer.writeheader()
            writer.writerows(rows)
        self.tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter  # optional extra
            except ImportError as err:
                raise SystemExit("error: --tensorboard needs the tensorboard package "
                                 "(pip install 'retint[tensorboard]')") from err
            self.tb = SummaryWriter(str(out / "tensorboard"))

    def write(self, row: dict) -> None:
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, LOG_FIELDS).writerow(row)
        if self.tb is not None:
            for k, v in row.items():
                if k not in ("step", "epoch") and v != "":
                    self.tb.add_scalar(k, float(v), int(row["step"]))

    def plot(self, png: Path) -> None:
        plot_curves(self.path, png)


def plot_curves(csv_path: Path, png: Path) -> None:
    """Loss, PSNR_ab and SSIM_ab against step, model vs the no-colour baseline."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with csv_path.open() as f:
        rows = list(csv.DictReader(f))

    def series(key):
        pts = [(int(r["step"]), float(r[key])) for r in rows if r.get(key) not in (None, "")]
        return ([s for s, _ in pts], [v for _, v in pts])

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    axes[0].plot(*series("train_loss"), label="train loss")
    axes[0].plot(*series("val_loss"), "o-", label="validation loss")
    axes[0].set_yscale("log")
    for ax, metric, name in ((axes[1], "psnr_ab", "PSNR_ab (dB)"), (axes[2], "ssim_ab", "SSIM_ab")):
        ax.plot(*series(f"val_{metric}"), "o-", label="model")
        ax.plot(*series(f"base_{metric}"), "--", label="no colour (baseline)")
        ax.set_ylabel(name)
    for ax in axes:
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    atomic_write(png, lambda tmp: fig.savefig(tmp, format="png", dpi=90))
    plt.close(fig)


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1]),
             "numpy": torch.from_numpy(np.random.get_state()[1].astype(np.int64)),
             "numpy_pos": int(np.random.get_state()[2])}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate((3, tuple(state["python"]), None))
    np.random.set_state(
        ("MT19937", state["numpy"].numpy().astype(np.uint32), state["numpy_pos"], 0, 0.0))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---------------------------------------------------------------- the loop


@torch.no_grad()
def validate(net: Net, val_rgb: Tensor, objective: Objective, device, amp: bool,
             batch: int = 16) -> dict[str, float]:
    """Mean loss and PSNR/SSIM on ab over the validation crops (model in eval mode)."""
    was_training = net.training
    net.eval()
    means, losses, cf_pred, cf_true = MetricMeans(), [], 0.0, 0.0
    for i in range(0, len(val_rgb), batch):
        rgb = val_rgb[i : i + batch].to(device, non_blocking=True).float() / 255.0
        l, ab = rgb_to_model(rgb)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            pred, _ = net(l, hints=objective.hints(l, ab, seed=i))
        pred = pred.float()
        losses.append(float(objective.recon(pred, ab, weighted=False)) * len(rgb))
        means.update({**ab_metrics(pred, ab), **cast_metrics(pred * AB_SCALE, ab * AB_SCALE)})
        cf_pred += float(colorfulness(model_to_rgb(l, pred) * 255).sum())
        cf_true += float(colorfulness(rgb * 255).sum())
    net.train(was_training)
    out = means.means()
    return {"val_loss": sum(losses) / len(val_rgb), **{f"val_{k}": v for k, v in out.items()},
            "val_cf_ratio": cf_pred / max(cf_true, 1e-9)}


def training_histogram(dataset: RandomCrops, count: int = HISTOGRAM_CROPS) -> Tensor:
    """ab histogram of ``count`` random training crops: every photo, over as many epochs of
    crops as it takes (deterministic: crops are keyed by epoch and index)."""
    hist = torch.zeros(AB_BINS, AB_BINS, dtype=torch.float64)
    for k in range(count):
        rgb = dataset[(k // len(dataset), k % len(dataset))][None].float() / 255.0
        hist += ab_histogram(rgb_to_model(rgb)[1])
    return hist


def fit(cfg: TrainConfig) -> dict:
    """Train (or distil) per ``cfg``; returns the final validation figures."""
    return Trainer(cfg).run()


class Trainer:
    """The state of one run (data, model, objective, optimiser, step) and its loop, split into
    the steps :meth:`run` reads top to bottom."""

    def __init__(self, cfg: TrainConfig) -> None:
        for name, size in (("crop", cfg.crop), ("val size", cfg.val_size)):
            check_size(name, size)
        self.cfg = cfg
        if cfg.steps < 0 or (cfg.steps == 0 and cfg.time_budget <= 0):
            raise SystemExit("error: steps must be positive, or 0 with a time budget")
        self.ddp, self.device = init_distributed(cfg.device)
        if self.ddp.active and cfg.steps == 0:  # each rank's clock would set its own rate
            raise SystemExit("error: under torchrun give a number of steps, not steps 0")
        if self.ddp.active and cfg.gan_weight > 0:
            raise SystemExit("error: --gan-weight is not supported under torchrun yet "
                             "(train the GAN stage in one process)")
        self.out = Path(cfg.out)
        self.out.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(cfg.seed)
        torch.backends.cudnn.benchmark = True  # fixed crop size: let cuDNN pick its kernels
        self.say = (lambda msg: tqdm.write(msg)) if self.ddp.main else (lambda msg: None)
        self.step, self.best, self.elapsed_before, self.t0 = 0, -math.inf, 0.0, time.time()
        self.aging = torch.Generator().manual_seed(cfg.seed + 7919)
        self._load_data()
        self._build()
        if cfg.resume:
            self._resume()
        self.train_net: nn.Module = self.net
        if self.ddp.active:
            self.train_net = nn.parallel.DistributedDataParallel(
                self.net, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self._start_stream()

    # -- set-up

    def _load_data(self) -> None:
        cfg, say = self.cfg, self.say
        scan = self.scan = scan_photos(cfg.data, cfg.val_fraction, cfg.seed)
        say(f"photos: {len(scan.train)} train, {len(scan.val)} validation, "
            f"{len(scan.skipped_gray)} gray/monotone skipped, {len(scan.unreadable)} unreadable")
        for _, why in scan.unreadable:
            say(f"  skipped {why}")
        if not scan.train or not scan.val:
            raise SystemExit("error: need colour photos for both training and validation "
                             f"(found {len(scan.train)} train, {len(scan.val)} validation)")
        if self.ddp.main:
            split = {"seed": cfg.seed, "val_fraction": cfg.val_fraction,
                     "train": [p.key for p in scan.train], "val": [p.key for p in scan.val],
                     "skipped_gray": [p.key for p in scan.skipped_gray]}
            (self.out / "split.json").write_text(json.dumps(split, indent=1) + "\n")
            (self.out / "config.json").write_text(json.dumps(asdict(cfg), indent=2) + "\n")
        self.val_rgb = center_crops(scan.val, cfg.val_size)
        base = MetricMeans()
        for i in range(0, len(self.val_rgb), 32):
            base.update(baseline_metrics(rgb_to_model(self.val_rgb[i : i + 32].float() / 255)[1]))
        self.base_figures = {f"base_{k}": v for k, v in base.means().items()}

    def _build(self) -> None:
        cfg, device = self.cfg, self.device
        if cfg.hint_points > 0:  # hint layers (refiner at zero) on the frozen teacher of ``init``
            if not cfg.init:
                raise SystemExit("error: hint training needs init: the teacher to build the "
                                 "hint model on (e.g. the bundled src/retint/weights/teacher)")
            from .models import resolve_model_path
            from .models.hinted import hinted_from

            self.model = model = hinted_from(resolve_model_path(cfg.init))
            self.say(f"training hint layers on the frozen {cfg.init}")
        else:
            self.model = model = build_model(cfg.arch, cfg.width, cfg.backbone, cfg.pyramid)
        if cfg.init and cfg.hint_points <= 0:
            start_from(model, cfg.init)
            self.say(f"starting from the weights of {cfg.init}")
        self.objective = Objective(cfg, device)
        adapter = None
        if self.objective.teacher is not None:
            t_channels = self.objective.teacher.latent_channels
            if t_channels != model.latent_channels:
                adapter = nn.Conv2d(model.latent_channels, t_channels, kernel_size=1)
        self.net = Net(model, adapter).to(device)
        if device.type == "cuda":  # NHWC: the layout tensor cores convolve in
            self.net.to(memory_format=torch.channels_last)
            if self.objective.teacher is not None:
                self.objective.teacher.to(memory_format=torch.channels_last)
        self.optimizer = torch.optim.AdamW(self.net.parameters(), lr=cfg.lr,
                                           weight_decay=cfg.weight_decay)
        self.adversary = Adversary(cfg.gan_weight, cfg.gan_start, cfg.gan_lr, device) \
            if cfg.gan_weight > 0 else None
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(s, cfg, self._elapsed()))
        self.amp = cfg.amp and (device.type == "cuda"
                                or (device.type == "cpu" and cpu_has_bf16()))
        self.say(f"model: {cfg.arch} x{cfg.width}"
                 + (f" + frozen {model.backbone}" if model.backbone else "")
                 + (" at every scale" if getattr(model, "pyramid", False) else "")
                 + f" ({count_parameters(model):,} trained parameters) on {device}"
                 + (" in bf16 autocast" if self.amp else "")
                 + (f", {self.ddp.world} processes" if self.ddp.active else "")
                 + (", distilling from " + str(cfg.teacher) if cfg.teacher else ""))

    def _resume(self) -> None:
        last = self.out / "last.pt"
        if not last.exists():
            raise SystemExit(f"error: --resume given but {last} does not exist")
        state = torch.load(last, map_location=self.device, weights_only=True)
        self.net.load_state_dict(state["net"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.adversary is not None:
            if "adversary" not in state:
                raise SystemExit(f"error: {last} has no discriminator (run without GAN)")
            self.adversary.load_state_dict(state["adversary"])
        self.step, self.best, self.elapsed_before = state["step"], state["best"], state["elapsed"]
        _set_rng_state(state["rng"])
        if "aging" in state:  # checkpoints before it was saved restart their ageing stream
            self.aging.set_state(state["aging"])
        self.say(f"resumed from {last} at step {self.step}")

    def _start_stream(self) -> None:
        """Rarity weights (if asked), the sampler that replays from ``step``, the loader, log."""
        cfg, ddp = self.cfg, self.ddp
        dataset = RandomCrops(self.scan.train, cfg.crop, cfg.max_scale, cfg.seed)
        if cfg.rebalance > 0:
            histogram = training_histogram(dataset)
            weights = rarity_weights(histogram, cfg.rebalance)
            self.objective.weights = weights.to(self.device)
            if ddp.main:
                tensors = {"histogram": histogram, "weights": weights}
                atomic_write(self.out / "ab_rarity.safetensors",
                             lambda tmp: save_file(tensors, tmp))
            self.say(f"rarity weights (strength {cfg.rebalance}): "
                     f"{float(weights.min()):.2f} to {float(weights.max()):.2f}")
        per_rank_batch = max(1, cfg.batch_size // ddp.world)
        sampler = EpochSampler(len(dataset), cfg.seed, ddp.rank, ddp.world,
                               start=self.step * per_rank_batch)
        if cfg.data_on_device:
            crops = DeviceCrops(self.scan.train, cfg.crop, cfg.max_scale, cfg.seed, self.device)
            self.say(f"{len(crops)} training photos held on {self.device} "
                     f"({crops.nbytes / 2**20:.0f} MiB)")
            self.batches = crops.stream(sampler, per_rank_batch, self.step)
        else:
            loader = DataLoader(dataset, batch_size=per_rank_batch, sampler=sampler,
                                num_workers=cfg.workers, pin_memory=self.device.type == "cuda",
                                persistent_workers=cfg.workers > 0, drop_last=True)
            self.batches = iter(loader)
        self.steps_per_epoch = max(1, sampler.per_epoch // per_rank_batch)
        self.val_every = cfg.val_every or self.steps_per_epoch
        self.log = RunLog(self.out, self.step if cfg.resume else None, cfg.tensorboard) \
            if ddp.main else None

    # -- the loop

    def run(self) -> dict:
        cfg, ddp = self.cfg, self.ddp
        self.t0 = time.time()
        self.net.train()
        bar = tqdm(total=cfg.steps or None, initial=self.step, unit="step", dynamic_ncols=True,
                   disable=not (ddp.main and cfg.progress))
        acc: dict = {}  # loss parts summed since the last log row (tensors), and "n"
        figures: dict = {}
        stopped_early = False
        while cfg.steps == 0 or self.step < cfg.steps:
            for k, v in self._train_step().items():
                acc[k] = acc.get(k, 0.0) + v
            acc["n"] = acc.get("n", 0) + 1
            bar.update(1)
            out_of_time = self._out_of_time()
            last = self.step == cfg.steps or out_of_time
            validating = self.step % self.val_every == 0 or last
            if ddp.main and (self.step % cfg.log_every == 0 or validating):
                figures = self._log(acc, bar, validating) or figures
                acc = {}
            if ddp.main and (self.step % cfg.ckpt_every == 0 or last):
                self._checkpoint()
            if out_of_time and cfg.steps == 0:  # the budget was the plan
                break
            if out_of_time:
                stopped_early = True
                self.say(f"time budget of {cfg.time_budget:.0f} s reached at step {self.step}: "
                         "stopped cleanly (continue with --resume and a larger budget)")
                break
        bar.close()
        self._finish(figures, stopped_early)
        return figures

    def _train_step(self) -> dict[str, float]:
        """One optimiser step (and one discriminator step with a GAN); the loss parts."""
        amp, device, adversary = self.amp, self.device, self.adversary
        rgb = next(self.batches).to(device, non_blocking=True).float() / 255.0
        l, ab = rgb_to_model(rgb)
        l_in = age_lightness(l, self.cfg.old_photo, self.aging) if self.cfg.old_photo else l
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss, parts, pred = self.objective(self.train_net, l_in, ab, clean_l=l)
            gan_on = adversary is not None and adversary.active(self.step)
            if gan_on:
                parts["adv"] = adversary.generator_loss(l, pred)
                loss = loss + adversary.weight * parts["adv"]
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        if gan_on:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                parts["disc"] = adversary.step(l, ab, pred)
        self.step += 1  # the parts stay tensors: read at log time, a GPU is not waited on
        return {k: v.detach().float() for k, v in {"loss": loss, **parts}.items()}

    def _elapsed(self) -> float:
        return self.elapsed_before + time.time() - self.t0

    def _out_of_time(self) -> bool:
        out_of_time = self.cfg.time_budget > 0 and self._elapsed() > self.cfg.time_budget
        if self.ddp.active and self.cfg.time_budget > 0:  # all ranks stop at the same step
            flag = torch.tensor([float(out_of_time)], device=self.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            out_of_time = bool(flag.item())
        return out_of_time

    def _log(self, acc: dict[str, float], bar: tqdm, validating: bool) -> dict | None:
        """Write a log row of the mean loss parts (and validate: then the figures)."""
        n = acc.pop("n")
        acc = {k: float(v) for k, v in acc.items()}
        row = {"step": self.step, "epoch": f"{self.step / self.steps_per_epoch:.3f}",
               "seconds": f"{self._elapsed():.1f}",
               "lr": f"{self.scheduler.get_last_lr()[0]:.3g}",
               **{f"train_{k}": f"{v / n:.6g}" for k, v in acc.items()}}
        bar.set_postfix(loss=f"{acc['loss'] / n:.4g}", lr=row["lr"])
        figures = self._validate() if validating else None
        if figures:
            row.update({k: f"{v:.6g}" for k, v in figures.items()})
        self.log.write(row)
        if validating:
            self.log.plot(self.out / "curves.png")
        return figures

    def _validate(self) -> dict:
        figures = validate(self.net, self.val_rgb, self.objective, self.device, self.amp)
        figures.update(self.base_figures)
        if figures["val_psnr_ab"] > self.best:
            self.best = figures["val_psnr_ab"]
            save_weights(self.model, self.out / "best", self._card(figures))
        self.say(f"step {self.step}: val PSNR_ab {figures['val_psnr_ab']:.2f} dB "
                 f"(no colour {figures['base_psnr_ab']:.2f}), SSIM_ab "
                 f"{figures['val_ssim_ab']:.4f} (no colour {figures['base_ssim_ab']:.4f}), "
                 f"colourfulness {100 * figures['val_cf_ratio']:.0f}% of the truth, cast "
                 f"{figures['val_cast']:.2f} (mean b* {figures['val_b_mean']:+.1f} vs "
                 f"{figures['val_b_truth']:+.1f})")
        return figures

    def _card(self, figures: dict) -> dict:
        cfg, scan = self.cfg, self.scan
        return {
            "steps": self.step, "train_seconds": round(self._elapsed(), 1),
            "device": describe_device(self.device), "processes": self.ddp.world,
            "data": {"roots": [str(Path(r)) for r in cfg.data],
                     "train_photos": len(scan.train), "val_photos": len(scan.val),
                     "skipped_gray": len(scan.skipped_gray)},
            "validation": {"size": cfg.val_size, **{k: round(v, 4) for k, v in figures.items()}},
            "recipe": {k: v for k, v in asdict(cfg).items()
                       if k not in ("data", "out", "resume", "progress", "extra_card")},
            **cfg.extra_card,
        }

    def _checkpoint(self) -> None:
        state = {"net": self.net.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "scheduler": self.scheduler.state_dict(), "step": self.step, "best": self.best,
                 "elapsed": self._elapsed(), "rng": _rng_state(),
                 "aging": self.aging.get_state()}
        if self.adversary is not None:
            state["adversary"] = self.adversary.state_dict()
        atomic_write(self.out / "last.pt", lambda tmp: torch.save(state, tmp))

    def _finish(self, figures: dict, stopped_early: bool) -> None:
        """Check that all ranks agree, write the final weights, leave the process group."""
        ddp = self.ddp
        if ddp.active:  # show that all ranks hold the same weights
            mine = torch.tensor([parameter_checksum(self.net)], dtype=torch.float64,
                                device=self.device)
            gathered = [torch.zeros_like(mine) for _ in range(ddp.world)]
            dist.all_gather(gathered, mine)
            sums = [float(g.cpu()) for g in gathered]
            self.say(f"ranks in sync: {len(set(sums)) == 1} (parameter checksums {sums})")
            if len(set(sums)) != 1:
                raise RuntimeError(f"distributed ranks diverged: {sums}")
        if ddp.main:
            save_weights(self.model, self.out / "final", self._card(figures))
            self.say(f"done: {self.step} steps{' (time budget)' if stopped_early else ''}; "
                     f"weights in {self.out / 'best.safetensors'} (best validation) and "
                     f"{self.out / 'final.safetensors'}")
        if ddp.active:
            dist.barrier()
            dist.destroy_process_group()
