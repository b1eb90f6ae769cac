"""Small building blocks shared by several components (MLP heads, channel LayerNorm)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MLP(nn.Module):
    """A stack of ``num_layers`` Linear layers with an activation between them.

    Parameter names (``layers.N.weight``) follow the official checkpoints.

    Args:
        input_dim, hidden_dim, output_dim: feature sizes.
        num_layers: number of Linear layers (>= 1).
        activation: activation module class used between layers.
        sigmoid_output: apply a sigmoid to the final output.
    """

    def __init__(
        self,
        input_dim: int,
        hidden_dim: int,
        output_dim: int,
        num_layers: int,
        *,
        activation: type[nn.Module] = nn.ReLU,
        sigmoid_output: bool = False,
    ) -> None:
        super().__init__()
        self.num_layers = num_layers
        dims_in = [input_dim] + [hidden_dim] * (num_layers - 1)
        dims_out = [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(dims_in, dims_out))
        self.act = activation()
        self.sigmoid_output = sigmoid_output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [..., input_dim] -> [..., output_dim]."""
        return by_row_chunks(self._forward, x)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers[:-1]:
            x = linear_activation(x, layer, self.act)
        x = linear(x, self.layers[-1])
        return torch.sigmoid(x) if self.sigmoid_output else x


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel dimension of a [B, C, H, W] tensor."""

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, C, H, W] -> [B, C, H, W], each pixel's C values normalised."""
        # layer_norm normalises trailing dims, so move channels last and back.
        y = F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), self.weight, self.bias, self.eps)
        return y.permute(0, 3, 1, 2)


# Rows per chunk of a row-wise function run chunk by chunk (see `by_row_chunks`).
CHUNK_ROWS = 1024


def by_row_chunks(fn, x: torch.Tensor) -> torch.Tensor:
    """fn(x) for a row-wise fn on x: [..., C], applied to CHUNK_ROWS rows at a time.

    An MLP over 4096 tokens widens them to a 16-32 MB hidden activation; in chunks it
    stays in cache, which makes the MLP about a quarter faster on CPU. The result is the
    same (each row is computed alone either way). Outside autograd only, and in
    exported graphs.
    """
    if torch.compiler.is_exporting():
        return _by_row_chunks_traced(fn, x)
    if torch.is_grad_enabled():
        return fn(x)
    rows = x.shape[:-1].numel()
    if rows <= 2 * CHUNK_ROWS:
        return fn(x)
    flat = x.reshape(rows, x.shape[-1])
    out = torch.cat([fn(chunk) for chunk in flat.split(CHUNK_ROWS)])
    return out.view(*x.shape[:-1], out.shape[-1])


def _by_row_chunks_traced(fn, x: torch.Tensor) -> torch.Tensor:
    """`by_row_chunks` as traced for export (with autograd on), where the batch (first)
    axis may be dynamic: the rows of each batch item, a static count, go in chunks. In
    onnxruntime the image encoder's first-stage MLP (65,536 rows) ran 20 % faster in
    chunks of 1024 rows, for the same reason as in torch."""
    rows = 1
    for size in x.shape[1:-1]:
        if not isinstance(size, int):  # a dynamic axis besides the batch: one piece
            return fn(x)
        rows *= size
    if x.dim() < 3 or rows <= 2 * CHUNK_ROWS:
        return fn(x)
    flat = x.reshape(-1, rows, x.shape[-1])
    out = torch.cat([fn(chunk) for chunk in flat.split(CHUNK_ROWS, dim=1)], dim=1)
    return out.reshape(*x.shape[:-1], out.shape[-1])


def _onednn_activation(act) -> tuple[str, str] | None:
    """(post-op, algorithm) of a oneDNN fused linear for this activation, if it has one."""
    if isinstance(act, nn.GELU) or act is F.gelu:
        approximate = getattr(act, "approximate", "none")
        return ("gelu", approximate) if approximate in ("none", "tanh") else None
    if isinstance(act, nn.ReLU) or act is F.relu:
        return ("relu", "")
    return None


# oneDNN linear with bias and activation applied as the output is written (the op
# torch.compile's CPU backend emits). Absent from builds without oneDNN: then plain ops.
_FUSED_LINEAR = getattr(torch.ops.mkldnn, "_linear_pointwise", None)


def _fused_dtypes() -> frozenset[torch.dtype]:
    """Dtypes oneDNN's fused linear takes on this CPU: bf16 only where the CPU has native
    bf16 (AVX-512 BF16 / AMX); elsewhere oneDNN has no bf16 kernel and refuses the call."""
    bf16 = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return frozenset({torch.float32, *([torch.bfloat16] if bf16 is not None and bf16() else [])})


_FUSED_DTYPES = _fused_dtypes()


def _fusable(x: torch.Tensor, layer: nn.Linear) -> bool:
    return (
        _FUSED_LINEAR is not None
        and x.device.type == "cpu"
        and x.dtype in _FUSED_DTYPES
        and x.dtype == layer.weight.dtype
        and not torch.is_grad_enabled()
        and not torch.is_autocast_enabled("cpu")
        # Under torch.compile the backend fuses (and lowers) linears itself.
        and not torch.compiler.is_compiling()
    )


def linear_activation(x: torch.Tensor, layer: nn.Linear, act) -> torch.Tensor:
    """act(layer(x)) for x: [..., in] -> [..., out], in one pass over the output on CPU.

    Outside autograd on CPU, oneDNN adds the bias and applies GELU / ReLU while writing the
    matmul's result (the same kernels, so the same numbers as the separate ops); this saves
    two passes over the widest activations of the model (the MLP hidden layers). Anywhere
    else, and for other activations, it is the plain ``act(layer(x))``.
    """
    post = _onednn_activation(act)
    if post is not None and _fusable(x, layer):
        return _FUSED_LINEAR(x, layer.weight, layer.bias, post[0], [], post[1])
    return act(layer(x))


def linear(x: torch.Tensor, layer: nn.Linear) -> torch.Tensor:
    """layer(x), with the bias added by oneDNN as it writes the result where that is faster.

    The default CPU linear first copies the bias into every output row; for narrow inputs
    or outputs (the matmul is then bound by memory traffic, not arithmetic) that extra
    pass costs 10-80 %. Used outside autograd on CPU only; elsewhere ``layer(x)``.
    """
    narrow = layer.in_features <= 256 or layer.out_features <= 128
    if narrow and _fusable(x, layer):
        return _FUSED_LINEAR(x, layer.weight, layer.bias, "none", [], "")
    return layer(x)


def activation_fn(name: str):
    """Functional activation by name ("relu", "gelu", "glu")."""
    table = {"relu": F.relu, "gelu": F.gelu, "glu": F.glu}
    if name not in table:
        raise ValueError(f"unknown activation {name!r}; expected one of {sorted(table)}")
    return table[name]
