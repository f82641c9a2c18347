"""The layers the README's layout states, checked on the source: imports run down the layers only,
and every architecture follows the one network protocol (``models.base.VideoSRNet``)."""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from stvsr_cli.models.base import VideoSRNet
from stvsr_cli.models.registry import ARCHITECTURES, ModelSpec, architecture

PACKAGE = Path(__file__).resolve().parent.parent / "stvsr_cli"

# (modules under this path, imports they must never make at run time)
FORBIDDEN = [
    ("models", ("stvsr_cli.training", "stvsr_cli.evaluation", "stvsr_cli.pipeline", "stvsr_cli.io",
                "stvsr_cli.api", "stvsr_cli.batch", "stvsr_cli.cli")),
    ("io", ("stvsr_cli.pipeline", "stvsr_cli.models", "stvsr_cli.training", "stvsr_cli.api", "stvsr_cli.batch",
            "stvsr_cli.cli")),
    ("pipeline", ("stvsr_cli.api", "stvsr_cli.batch", "stvsr_cli.cli", "stvsr_cli.training")),
    ("hub.py", ("stvsr_cli.models", "stvsr_cli.pipeline", "stvsr_cli.io", "stvsr_cli.api", "stvsr_cli.cli")),
]  # fmt: skip


def runtime_imports(path: Path, package_root: Path = PACKAGE) -> set[str]:
    """Every module ``path`` imports, in functions too, except under ``if TYPE_CHECKING:``."""
    tree = ast.parse(path.read_text(), str(path))
    package = ".".join(path.relative_to(package_root.parent).with_suffix("").parts[:-1])
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against the package
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def test_the_import_checker_sees_function_level_and_relative_imports_but_not_type_checking(tmp_path):
    fake = tmp_path / "stvsr_cli" / "models" / "x.py"
    fake.parent.mkdir(parents=True)
    fake.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from stvsr_cli.api import upscale\n"
        "def f():\n    from stvsr_cli.training import trainer\n"
        "from ..evaluation import score_clip\n"
    )
    found = runtime_imports(fake, tmp_path / "stvsr_cli")
    assert "stvsr_cli.training" in found and "stvsr_cli.evaluation" in found
    assert not any(name.startswith("stvsr_cli.api") for name in found)


@pytest.mark.parametrize("where,forbidden", FORBIDDEN, ids=[w for w, _ in FORBIDDEN])
def test_imports_run_down_the_layers(where, forbidden):
    root = PACKAGE / where
    files = [root] if root.is_file() else sorted(root.rglob("*.py"))
    assert files
    wrong = [
        f"{path.relative_to(PACKAGE)} imports {name}"
        for path in files
        for name in sorted(runtime_imports(path))
        if name.startswith(forbidden)
    ]
    assert not wrong, "\n".join(wrong)


def test_only_the_cli_layer_imports_click_or_rich():
    cli_layer = {"cli.py", "cmdoptions.py", "display.py"}
    wrong = [
        f"{path.relative_to(PACKAGE)} imports {name}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.relative_to(PACKAGE).as_posix() not in cli_layer
        for name in sorted(runtime_imports(path))
        if name.split(".")[0] in ("click", "rich")
    ]
    assert not wrong, "\n".join(wrong)


TINY = {
    "classic": {},
    "zsm": {"nf": 16, "groups": 8, "front_rbs": 1, "back_rbs": 1},
    "stvun": {"nf": 8, "levels": 2, "flow_nf": 8, "frames": 3},
    "tpsr": {"imdn_nf": 8, "imdn_blocks": 1, "nf": 8, "rs_blocks": 1, "refine_nf": 8},
    "stinet": {"nf": 8, "sr_blocks": 1, "pnet_blocks": 1, "lr_modules": 1, "groups": 4, "gcn_layers": 1,
               "flow_nf": 8, "flow_levels": 3},
    "davsr": {"nf": 8, "blocks": 1, "flow_nf": 8, "deform_groups": 4, "iterations": 1},
}  # fmt: skip


def test_every_architecture_has_tiny_params_here():
    assert set(TINY) == set(ARCHITECTURES)


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_every_architecture_follows_the_protocol_on_any_frame_size(arch):
    """``run`` pads to the network's size multiple once and crops: an odd-sized window gives
    ``fps_x (N-1) + 1`` frames of exactly ``scale`` times the size, at each declared time factor."""
    cls = architecture(ModelSpec(name="", arch=arch))
    assert issubclass(cls, VideoSRNet)
    torch.manual_seed(0)
    model = cls(**TINY[arch]).eval()
    n = TINY[arch].get(cls.window_param, 3) if cls.window_param else 3
    frames = torch.rand(1, n, 3, 13, 18)
    for fps_x in cls.time_factors or (2, 3):
        with torch.no_grad():
            out = model.run(frames, fps_x)
        assert out.shape == (1, fps_x * (n - 1) + 1, 3, model.scale * 13, model.scale * 18)
        assert torch.isfinite(out).all()
    if cls.arbitrary_times:
        with torch.no_grad():
            out = model.run(frames, 2, times=[0.0, 0.5, 1.25])
        assert out.shape == (1, 3, 3, model.scale * 13, model.scale * 18)


def untrained(model: torch.nn.Module, exempt: set[str] = frozenset()) -> list[str]:
    """The parameters (but ``exempt``) whose gradient is missing, not finite, or zero everywhere."""
    return [
        name
        for name, p in model.named_parameters()
        if p.requires_grad
        and name not in exempt
        and (p.grad is None or not torch.isfinite(p.grad).all() or not p.grad.any())
    ]


# Optimiser steps before every parameter has a gradient: layers behind one that starts at zero by design
# get exactly zero until that layer has moved.
WARM_UP = {
    "zsm": 1,  # the deformable alignments' offset branches feed only ``conv_offset_mask``, which starts at zero
    "stvun": 1,  # the flow network's inner layers feed only its last convolution, which starts at zero
    "davsr": 2,  # its prior step (``RVE``, and log_beta, which only feeds it) is behind the zero-start last
    # convolution of ``RVE.reconstruct``, and RVE's flow network behind its own as well: two zero starts in a chain
}


def closed_attentions(model: torch.nn.Module) -> Callable[[], tuple[set[str], int]]:
    """Watch the IMDN channel attentions (TPSR's). Each call gives, for the passes since the last one,
    the parameters of the attentions whose squeezed channels the ReLU closed on the whole batch, which
    therefore get no gradient (the squeeze, the excitation's weight), and how many attentions were open.
    At the tiny width the squeeze has one channel, so a closed one is the seed's chance, not a fault."""
    from stvsr_cli.models.tpsr import ContrastChannelAttention

    opened: dict[str, bool] = {}
    for prefix, module in model.named_modules():
        if isinstance(module, ContrastChannelAttention):
            opened[prefix] = False

            def hook(_module, _args, out, prefix=prefix):
                opened[prefix] |= bool((out > 0).any())

            module.squeeze.register_forward_hook(hook)

    def closed() -> tuple[set[str], int]:
        names = ("squeeze.weight", "squeeze.bias", "excite.weight")
        shut = {f"{prefix}.{name}" for prefix, is_open in opened.items() if not is_open for name in names}
        count = sum(opened.values())
        opened.update(dict.fromkeys(opened, False))
        return shut, count

    return closed


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("arch", sorted(set(ARCHITECTURES) - {"classic"}))
def test_the_default_training_loss_or_its_own_trains_every_parameter(arch):
    """In the last stage of the schedule (which trains everything), after the ``WARM_UP`` optimiser
    steps, every parameter gets a finite gradient that is not zero everywhere. The one exemption, each
    checked on the pass: a channel attention closed by its ReLU (``closed_attentions``)."""
    cls = architecture(ModelSpec(name="", arch=arch))
    torch.manual_seed(0)
    model = cls(**TINY[arch]).train()
    n = TINY[arch].get(cls.window_param, 3) if cls.window_param else 3
    factors = cls.training_time_factors() or (2,)
    # x2 alone asks for t = 1/2 only, where a constant flow cancels in STVUN's Eq. 4 (``stvun.flows_at``):
    # its finest flow's last bias gets no gradient there, by design. Arbitrary-time training draws x3 too.
    fps_x = 3 if 3 in factors else factors[0]
    frames = torch.rand(2, n, 3, 16, 16)
    target = torch.rand(2, fps_x * (n - 1) + 1, 3, 64, 64)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    closed = closed_attentions(model)
    for step in range(WARM_UP.get(arch, 0) + 1):
        optimiser.zero_grad(set_to_none=True)
        loss = model.training_loss(frames, target, fps_x, progress=0.99)
        loss.backward()
        assert torch.isfinite(loss), step
        exempt, open_attentions = closed()
        if step < WARM_UP.get(arch, 0):
            optimiser.step()
    idle = untrained(model, exempt)
    assert not idle, idle
    if arch == "tpsr":  # its two attentions (TPSRM's, the space SR's) are not both exempt: one is checked
        assert open_attentions >= 1
