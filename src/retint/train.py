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
import platform
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

from .color import model_to_rgb, rgb_to_model
from .data import EpochSampler, RandomCrops, center_crops, scan_photos
from .io import atomic_write
from .losses import AB_BINS, ELEMENTWISE, Adversary, ab_histogram, pixel_loss, rarity_weights
from .metrics import MetricMeans, ab_metrics, baseline_metrics, colourfulness
from .models import build_model, count_parameters, load_weights, save_weights

LOG_FIELDS = [
    "step", "epoch", "seconds", "lr", "train_loss", "train_recon", "train_distill",
    "train_output", "train_adv", "train_disc", "val_loss", "val_psnr_ab", "val_ssim_ab",
    "val_cf_ratio", "base_psnr_ab", "base_ssim_ab",
]
HISTOGRAM_CROPS = 512  # training crops sampled for the ab histogram of rarity weighting


@dataclass
class TrainConfig:
    data: list[str]
    out: str
    arch: str = "teacher"
    width: float = 1.0
    backbone: str | None = None  # frozen pretrained encoder fused into the teacher
    fusion: str = "concat"  # how: "concat" or "film"
    backbone_tune: int = 0  # fine-tune copies of the encoder's last N blocks (stride 16)
    backbone_lr: float = 0.1  # their learning rate, as a fraction of ``lr``
    backbone_size: int = 0  # long side of L as the encoder sees it; 0 = the input's
    backbone_blocks: tuple[int, ...] = (10,)  # encoder blocks whose maps are fused
    init: str | None = None  # start from these weights (fine-tuning), not from scratch
    teacher: str | None = None  # a teacher's weights: distil into ``arch`` instead of training
    alpha: float = 0.5  # weight of the reconstruction loss (distillation)
    beta: float = 0.5  # weight of the latent-matching loss (distillation)
    kd_output: float = 0.0  # weight of matching the teacher's ab output (distillation)
    kd_sharpen: float = 1.0  # the teacher's ab is scaled by this (>1: more vivid targets)
    loss: str = "mse"
    rebalance: float = 0.0  # rarity weighting strength in [0, 1]; 0 = off
    gan_weight: float = 0.0  # weight of the PatchGAN term; 0 = no discriminator
    gan_start: int = 0  # step at which the discriminator joins (pixel-loss pre-training first)
    gan_lr: float = 2e-4
    steps: int = 10_000
    batch_size: int = 16  # global: split across processes
    crop: int = 128
    max_scale: float = 2.0
    lr: float = 5e-4
    weight_decay: float = 0.01
    warmup: int = 200
    schedule: str = "cosine"  # or "constant"
    val_fraction: float = 0.1
    val_size: int = 256
    val_every: int = 0  # steps; 0 = once per epoch
    ckpt_every: int = 500
    log_every: int = 10
    seed: int = 0
    workers: int = 2
    device: str = "auto"
    amp: bool = True  # bf16 autocast on CUDA
    time_budget: float = 0.0  # seconds of training before a clean stop; 0 = no limit
    resume: bool = False
    tensorboard: bool = False
    progress: bool = True
    extra_card: dict = field(default_factory=dict)


def describe_device(device: torch.device) -> str:
    """A human name for where training ran, for model cards."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "cpu":
        try:
            with open("/proc/cpuinfo") as f:
                model = next(line.split(":", 1)[1].strip() for line in f
                             if line.startswith("model name"))
        except (OSError, StopIteration):
            model = platform.processor() or platform.machine()
        return f"{model}, {os.cpu_count()} cores, {torch.get_num_threads()} threads"
    return device.type


def pick_device(name: str) -> torch.device:
    """``auto`` picks CUDA, then MPS, then the CPU; a named device must exist here."""
    if name != "auto":
        try:
            device = torch.device(name)
        except RuntimeError as err:
            raise ValueError(f"unknown device {name!r} (use auto, cpu, cuda, cuda:N or mps)") \
                from err
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {name!r} is not available: this torch sees no CUDA GPU")
        if device.type == "mps" and not (getattr(torch.backends, "mps", None)
                                         and torch.backends.mps.is_available()):
            raise ValueError(f"device {name!r} is not available on this machine")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


class Net(nn.Module):
    """What the optimiser trains: the model, plus a 1x1 latent adapter when a narrower student
    is distilled from a wider teacher (FitNets-style), so their latents can be compared."""

    def __init__(self, model: nn.Module, adapter: nn.Module | None = None) -> None:
        super().__init__()
        self.model = model
        self.adapter = adapter

    def forward(self, l: Tensor, with_latent: bool = False) -> tuple[Tensor, Tensor | None]:
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
        self.teacher: nn.Module | None = None
        if cfg.teacher:
            self.teacher, _ = load_weights(cfg.teacher, device)
            self.teacher.requires_grad_(False).eval()

    def recon(self, pred: Tensor, ab: Tensor, weighted: bool = True) -> Tensor:
        return pixel_loss(self.loss_name, pred, ab, self.weights if weighted else None)

    def __call__(self, net: nn.Module, l: Tensor, ab: Tensor
                 ) -> tuple[Tensor, dict[str, Tensor], Tensor]:
        """-> (loss, its parts for the log, the predicted ab)."""
        if self.teacher is None:
            pred, _ = net(l)
            recon = self.recon(pred, ab)
            return recon, {"recon": recon}, pred
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


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to 5 % (or constant)."""
    if step < cfg.warmup:
        return (step + 1) / cfg.warmup
    if cfg.schedule == "constant":
        return 1.0
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
            pred, _ = net(l)
        pred = pred.float()
        losses.append(float(objective.recon(pred, ab, weighted=False)) * len(rgb))
        means.update(ab_metrics(pred, ab))
        cf_pred += float(colourfulness(model_to_rgb(l, pred) * 255).sum())
        cf_true += float(colourfulness(rgb * 255).sum())
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
    for name, size in (("crop", cfg.crop), ("val size", cfg.val_size)):
        if size < 16 or size % 16:
            raise ValueError(f"{name} must be a multiple of 16 (the models halve it 4 times), "
                             f"got {size}")
    ddp, device = init_distributed(cfg.device)
    if ddp.active and cfg.gan_weight > 0:
        raise SystemExit("error: --gan-weight is not supported under torchrun yet "
                         "(train the GAN stage in one process)")
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    torch.backends.cudnn.benchmark = True  # fixed crop size: let cuDNN pick its fastest kernels
    say = (lambda msg: tqdm.write(msg)) if ddp.main else (lambda msg: None)

    # -- data
    scan = scan_photos(cfg.data, cfg.val_fraction, cfg.seed)
    say(f"photos: {len(scan.train)} train, {len(scan.val)} validation, "
        f"{len(scan.skipped_gray)} gray/monotone skipped, {len(scan.unreadable)} unreadable")
    for _, why in scan.unreadable:
        say(f"  skipped {why}")
    if not scan.train or not scan.val:
        raise SystemExit("error: need colour photos for both training and validation "
                         f"(found {len(scan.train)} train, {len(scan.val)} validation)")
    if ddp.main:
        split = {"seed": cfg.seed, "val_fraction": cfg.val_fraction,
                 "train": [p.key for p in scan.train], "val": [p.key for p in scan.val],
                 "skipped_gray": [p.key for p in scan.skipped_gray]}
        (out / "split.json").write_text(json.dumps(split, indent=1) + "\n")
        (out / "config.json").write_text(json.dumps(asdict(cfg), indent=2) + "\n")
    per_rank_batch = max(1, cfg.batch_size // ddp.world)
    val_rgb = center_crops(scan.val, cfg.val_size)

    # -- model, objective, optimiser
    model = build_model(cfg.arch, cfg.width, cfg.backbone, cfg.fusion, tune=cfg.backbone_tune,
                        input_size=cfg.backbone_size, blocks=tuple(cfg.backbone_blocks))
    if cfg.init:
        start, _ = load_weights(cfg.init)
        model.load_state_dict(start.state_dict())
        say(f"starting from the weights of {cfg.init}")
    objective = Objective(cfg, device)
    adapter = None
    if objective.teacher is not None:
        t_channels = objective.teacher.latent_channels
        if t_channels != model.latent_channels:
            adapter = nn.Conv2d(model.latent_channels, t_channels, kernel_size=1)
    net = Net(model, adapter).to(device)
    tuned = [p for n, p in net.named_parameters() if ".pretrained.tuned." in n]
    rest = [p for n, p in net.named_parameters() if ".pretrained.tuned." not in n]
    groups = [{"params": rest}] + ([{"params": tuned, "lr": cfg.lr * cfg.backbone_lr}]
                                   if tuned else [])
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    adversary = Adversary(cfg.gan_weight, cfg.gan_start, cfg.gan_lr, device) \
        if cfg.gan_weight > 0 else None
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, cfg))
    amp = cfg.amp and device.type == "cuda"

    step, best, elapsed_before = 0, -math.inf, 0.0
    last_ckpt = out / "last.pt"
    if cfg.resume:
        if not last_ckpt.exists():
            raise SystemExit(f"error: --resume given but {last_ckpt} does not exist")
        state = torch.load(last_ckpt, map_location=device, weights_only=True)
        net.load_state_dict(state["net"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if adversary is not None:
            if "adversary" not in state:
                raise SystemExit(f"error: {last_ckpt} has no discriminator (run without GAN)")
            adversary.load_state_dict(state["adversary"])
        step, best, elapsed_before = state["step"], state["best"], state["elapsed"]
        _set_rng_state(state["rng"])
        say(f"resumed from {last_ckpt} at step {step}")
    train_net: nn.Module = net
    if ddp.active:
        train_net = nn.parallel.DistributedDataParallel(
            net, device_ids=[device.index] if device.type == "cuda" else None)

    base = MetricMeans()
    for i in range(0, len(val_rgb), 32):
        base.update(baseline_metrics(rgb_to_model(val_rgb[i : i + 32].float() / 255.0)[1]))
    base_figures = {f"base_{k}": v for k, v in base.means().items()}
    say(f"model: {cfg.arch} x{cfg.width}"
        + (f" + frozen {model.backbone} ({model.fusion_mode})" if model.backbone else "")
        + f" ({count_parameters(model):,} trained parameters) on {device}"
        + (f", {ddp.world} processes" if ddp.active else "")
        + (", distilling from " + str(cfg.teacher) if cfg.teacher else ""))

    dataset = RandomCrops(scan.train, cfg.crop, cfg.max_scale, cfg.seed)
    if cfg.rebalance > 0:
        histogram = training_histogram(dataset)
        objective.weights = rarity_weights(histogram, cfg.rebalance).to(device)
        if ddp.main:
            tensors = {"histogram": histogram, "weights": objective.weights.cpu()}
            atomic_write(out / "ab_rarity.safetensors", lambda tmp: save_file(tensors, tmp))
        say(f"rarity weights (strength {cfg.rebalance}): "
            f"{float(objective.weights.min()):.2f} to {float(objective.weights.max()):.2f}")
    sampler = EpochSampler(len(dataset), cfg.seed, ddp.rank, ddp.world,
                           start=step * per_rank_batch)
    loader = DataLoader(dataset, batch_size=per_rank_batch, sampler=sampler,
                        num_workers=cfg.workers, pin_memory=device.type == "cuda",
                        persistent_workers=cfg.workers > 0, drop_last=True)
    steps_per_epoch = max(1, sampler.per_epoch // per_rank_batch)
    val_every = cfg.val_every or steps_per_epoch
    log = RunLog(out, step if cfg.resume else None, cfg.tensorboard) if ddp.main else None

    def card(figures: dict) -> dict:
        return {
            "steps": step, "train_seconds": round(elapsed_before + time.time() - t0, 1),
            "device": describe_device(device),
            "processes": ddp.world, "data": {"roots": [str(Path(r)) for r in cfg.data],
            "train_photos": len(scan.train), "val_photos": len(scan.val),
            "skipped_gray": len(scan.skipped_gray)},
            "validation": {"size": cfg.val_size, **{k: round(v, 4) for k, v in figures.items()}},
            "recipe": {k: v for k, v in asdict(cfg).items()
                       if k not in ("data", "out", "resume", "progress", "extra_card")},
            **cfg.extra_card,
        }

    def checkpoint() -> None:
        state = {"net": net.state_dict(), "optimizer": optimizer.state_dict(),
                 "scheduler": scheduler.state_dict(), "step": step, "best": best,
                 "elapsed": elapsed_before + time.time() - t0, "rng": _rng_state()}
        if adversary is not None:
            state["adversary"] = adversary.state_dict()
        atomic_write(last_ckpt, lambda tmp: torch.save(state, tmp))

    def evaluate_and_log(row: dict) -> dict:
        nonlocal best
        figures = validate(net, val_rgb, objective, device, amp)
        figures.update(base_figures)
        row.update({k: f"{v:.6g}" for k, v in figures.items()})
        if figures["val_psnr_ab"] > best:
            best = figures["val_psnr_ab"]
            save_weights(model, out / "best", card(figures))
        say(f"step {step}: val PSNR_ab {figures['val_psnr_ab']:.2f} dB "
            f"(no colour {figures['base_psnr_ab']:.2f}), SSIM_ab {figures['val_ssim_ab']:.4f} "
            f"(no colour {figures['base_ssim_ab']:.4f}), colourfulness "
            f"{100 * figures['val_cf_ratio']:.0f}% of the truth")
        return figures

    # -- loop
    t0 = time.time()
    net.train()
    bar = tqdm(total=cfg.steps, initial=step, disable=not (ddp.main and cfg.progress),
               unit="step", dynamic_ncols=True)
    acc: dict[str, float] = {}
    acc_n, figures, stopped_early = 0, {}, False
    batches = iter(loader)
    while step < cfg.steps:
        rgb = next(batches).to(device, non_blocking=True).float() / 255.0
        l, ab = rgb_to_model(rgb)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss, parts, pred = objective(train_net, l, ab)
            gan_on = adversary is not None and adversary.active(step)
            if gan_on:
                parts["adv"] = adversary.generator_loss(l, pred)
                loss = loss + adversary.weight * parts["adv"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        if gan_on:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                parts["disc"] = adversary.step(l, ab, pred)
        step += 1
        for k, v in {"loss": loss, **parts}.items():
            acc[k] = acc.get(k, 0.0) + float(v.detach())
        acc_n += 1
        bar.update(1)

        out_of_time = cfg.time_budget > 0 and elapsed_before + time.time() - t0 > cfg.time_budget
        if ddp.active and cfg.time_budget > 0:  # all ranks must stop at the same step
            flag = torch.tensor([float(out_of_time)], device=device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            out_of_time = bool(flag.item())
        last = step == cfg.steps or out_of_time
        validating = step % val_every == 0 or last
        if ddp.main and (step % cfg.log_every == 0 or validating):
            row = {"step": step, "epoch": f"{step / steps_per_epoch:.3f}",
                   "seconds": f"{elapsed_before + time.time() - t0:.1f}",
                   "lr": f"{scheduler.get_last_lr()[0]:.3g}",
                   **{f"train_{k}": f"{v / acc_n:.6g}" for k, v in acc.items()}}
            bar.set_postfix(loss=f"{acc['loss'] / acc_n:.4g}", lr=row["lr"])
            acc, acc_n = {}, 0
            if validating:
                figures = evaluate_and_log(row)
            log.write(row)
            if validating:
                log.plot(out / "curves.png")
        if ddp.main and (step % cfg.ckpt_every == 0 or last):
            checkpoint()
        if out_of_time:
            stopped_early = True
            say(f"time budget of {cfg.time_budget:.0f} s reached at step {step}: stopped cleanly "
                f"(continue with --resume and a larger budget)")
            break
    bar.close()

    if ddp.active:  # show that all ranks hold the same weights
        mine = torch.tensor([parameter_checksum(net)], dtype=torch.float64, device=device)
        gathered = [torch.zeros_like(mine) for _ in range(ddp.world)]
        dist.all_gather(gathered, mine)
        sums = [float(g.cpu()) for g in gathered]
        say(f"ranks in sync: {len(set(sums)) == 1} (parameter checksums {sums})")
        if len(set(sums)) != 1:
            raise RuntimeError(f"distributed ranks diverged: {sums}")
    if ddp.main:
        save_weights(model, out / "final", card(figures))
        say(f"done: {step} steps{' (time budget)' if stopped_early else ''}; weights in "
            f"{out / 'best.safetensors'} (best validation) and {out / 'final.safetensors'}")
    if ddp.active:
        dist.barrier()
        dist.destroy_process_group()
    return figures
