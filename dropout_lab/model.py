"""A multilayer perceptron with inverted dropout, in plain NumPy.

Each piece's backward pass sits right next to its forward pass. Shapes: ``N`` rows in the batch,
``D`` input features, ``H`` units in a hidden layer, ``K`` outputs (``K = 1`` for a binary task with a
sigmoid output, otherwise the number of classes with a softmax output).

Inverted dropout: during training every unit of a layer is zeroed with probability ``drop_rate`` and
the survivors are scaled by ``1 / (1 - drop_rate)``, so the expected activation is unchanged and
evaluation simply uses the network as it is: no mask, no rescaling.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from dropout_lab.errors import ConfigError, bad_value

ACTIVATIONS = ("sigmoid", "tanh", "relu")
INITS = ("uniform", "xavier", "he")
LOSSES = ("auto", "xent", "mse")
DTYPES = ("float32", "float64")

# 1 as a 0-d array of each dtype: as an operand it gives the same result as the Python float 1.0,
# with less overhead per NumPy call (which adds up on tiny arrays).
ONE = {np.dtype(t): np.ones((), dtype=t) for t in DTYPES}


# ----------------------------------------------------------------------------------------------
# Activations: forward returns a = f(z); backward turns dL/da into dL/dz using only a (in place).
# ----------------------------------------------------------------------------------------------

def act_forward(z: np.ndarray, name: str) -> np.ndarray:
    """Apply the activation to ``z`` (N, H) in place and return it."""
    if name == "relu":
        np.maximum(z, 0, out=z)
    elif name == "sigmoid":
        np.negative(z, out=z)
        np.exp(z, out=z)
        np.add(z, ONE.get(z.dtype, 1.0), out=z)
        np.reciprocal(z, out=z)  # 1 / (1 + exp(-z))
    elif name == "tanh":
        np.tanh(z, out=z)
    return z


def act_backward(da: np.ndarray, a: np.ndarray, name: str) -> np.ndarray:
    """Turn ``da`` = dL/da (N, H) into dL/dz in place, given the activation output ``a`` (N, H)."""
    if name == "relu":
        # relu'(z) is 1 exactly where the output is positive.
        np.multiply(da, a > 0, out=da)
    elif name == "sigmoid":
        da *= np.multiply(a, np.subtract(ONE.get(a.dtype, 1.0), a))  # sigmoid'(z) = a * (1 - a)
    elif name == "tanh":
        da *= np.subtract(ONE.get(a.dtype, 1.0), np.square(a))  # tanh'(z) = 1 - a^2
    return da


# ----------------------------------------------------------------------------------------------
# Output layer + loss. Both choices give dL/dz_out = (y_hat - y) / N for their natural pairing.
# ----------------------------------------------------------------------------------------------

def loss_forward_backward(
    z: np.ndarray, y: np.ndarray, loss: str, reduction: str = "mean"
) -> tuple[float, np.ndarray, np.ndarray]:
    """Loss of the output pre-activations ``z`` (N, K) against labels ``y`` (N,).

    Returns ``(loss, y_hat, dz)``: ``y_hat`` (N, K) are the probabilities (softmax, or sigmoid when
    K == 1) and ``dz`` (N, K) is dL/dz. ``loss`` is ``"xent"`` (cross-entropy) or ``"mse"`` (squared
    error ``0.5 * (y_hat - y)**2`` on sigmoid/softmax outputs, as in the 2015 post). ``reduction``
    ``"mean"`` averages over the batch, ``"sum"`` adds (the post's full-batch update).
    """
    n, k = z.shape
    scale = 1.0 / n if reduction == "mean" else 1.0
    if k == 1:
        # y_hat = 1 / (1 + exp(-z)) (N, 1), computed in one array; the target is y as a column.
        y_hat = np.negative(z)
        np.exp(y_hat, out=y_hat)
        np.add(y_hat, ONE.get(z.dtype, 1.0), out=y_hat)
        np.reciprocal(y_hat, out=y_hat)
        target = y.reshape(n, 1)
        if target.dtype != z.dtype:
            target = target.astype(z.dtype)
        diff = np.subtract(y_hat, target)  # y_hat - target (N, 1)
    else:
        # Softmax (N, K), shifted by the row maximum against overflow.
        y_hat = np.subtract(z, np.maximum.reduce(z, axis=1, keepdims=True))
        np.exp(y_hat, out=y_hat)
        np.divide(y_hat, np.add.reduce(y_hat, axis=1, keepdims=True), out=y_hat)
        rows = np.arange(n)
        diff = y_hat.copy()  # y_hat - target, the target being one-hot: subtract 1 at each label
        diff[rows, y] -= 1
    if loss == "xent":
        eps = np.finfo(z.dtype).tiny
        if k == 1:
            total = -(target * np.log(y_hat + eps) + (1 - target) * np.log(1 - y_hat + eps)).sum()
        else:
            total = -np.log(y_hat[rows, y] + eps).sum()
        dz = diff  # (y_hat - target): the natural pairing of cross-entropy with sigmoid / softmax
    else:  # mse
        total = 0.5 * float(np.vdot(diff, diff))
        if k == 1:
            dz = np.multiply(diff, y_hat)  # diff * sigmoid'(z) = diff * y_hat * (1 - y_hat)
            dz *= np.subtract(ONE.get(z.dtype, 1.0), y_hat)
        else:
            # Jacobian of the softmax applied to diff: y_hat * (diff - <diff, y_hat>).
            dz = y_hat * (diff - (diff * y_hat).sum(axis=1, keepdims=True))
    if scale != 1.0:
        dz *= scale
    return float(total) * scale, y_hat, dz


# ----------------------------------------------------------------------------------------------
# The network
# ----------------------------------------------------------------------------------------------

@dataclass
class MLPSpec:
    """Settings of a network (what the config says); the weights live in :class:`MLP`."""

    n_inputs: int
    hidden: Sequence[int]
    n_outputs: int
    activation: str = "relu"
    init: str = "he"
    drop_input: float = 0.0
    drop_hidden: float | Sequence[float] = 0.0
    loss: str = "auto"
    dtype: str = "float32"

    def __post_init__(self) -> None:
        self.hidden = [int(h) for h in self.hidden]
        for i, h in enumerate(self.hidden):
            if h <= 0:
                raise bad_value(f"model.hidden[{i}]", h, "a whole number of units >= 1")
        if self.n_inputs <= 0 or self.n_outputs <= 0:
            raise ConfigError(f"a network needs inputs and outputs, got {self.n_inputs=} {self.n_outputs=}.")
        if self.activation not in ACTIVATIONS:
            raise bad_value("model.activation", self.activation, " | ".join(ACTIVATIONS))
        if self.init not in INITS:
            raise bad_value("model.init", self.init, " | ".join(INITS))
        if self.loss not in LOSSES:
            raise bad_value("model.loss", self.loss, " | ".join(LOSSES))
        if self.dtype not in DTYPES:
            raise bad_value("model.dtype", self.dtype, " | ".join(DTYPES))
        check_drop_rate("model.drop_input", self.drop_input)
        self.drop_hidden = expand_drop_hidden(self.drop_hidden, len(self.hidden))
        if self.loss == "auto":
            self.loss = "xent"

    @property
    def sizes(self) -> list[int]:
        return [self.n_inputs, *self.hidden, self.n_outputs]


def check_drop_rate(key: str, drop_rate: object) -> float:
    """Return ``drop_rate`` as a float, or raise if it is not a number in [0, 1)."""
    if isinstance(drop_rate, bool) or not isinstance(drop_rate, (int, float, np.floating)):
        raise bad_value(key, drop_rate, "a number in [0, 1) (the fraction of units zeroed in training)")
    if not 0.0 <= float(drop_rate) < 1.0:
        raise bad_value(key, drop_rate, "a number in [0, 1) (the fraction of units zeroed in training)")
    return float(drop_rate)


def expand_drop_hidden(drop_hidden: object, n_hidden: int) -> list[float]:
    """One drop rate per hidden layer from a single number or a list of ``n_hidden`` numbers."""
    if isinstance(drop_hidden, (list, tuple)) or (hasattr(drop_hidden, "__len__") and not isinstance(drop_hidden, str)):
        rates = list(drop_hidden)  # type: ignore[arg-type]
        if len(rates) != n_hidden:
            raise bad_value(
                "model.drop_hidden", rates, f"one number, or a list of {n_hidden} numbers (one per hidden layer)"
            )
        return [check_drop_rate(f"model.drop_hidden[{i}]", r) for i, r in enumerate(rates)]
    return [check_drop_rate("model.drop_hidden", drop_hidden)] * n_hidden


class LayerWork:
    """Work arrays of one weight layer for batches of ``n`` rows, reused from batch to batch.

    ``keep`` (n, fan_in): dropout multipliers of the layer's input, 0 (dropped) or 1 / (1 - drop_rate);
    ``h_drop`` (n, fan_in): the input after dropout; ``h``: the input the layer saw (``h_drop``, the
    data, or the activation of the layer below), needed for dL/dW; ``z`` (n, fan_out): the
    pre-activation, overwritten in place by the activation; ``dh`` (n, fan_in): dL/dh (not for the
    first layer: no gradient is needed with respect to the data); ``ones`` (n,).

    ``drop_rate`` and ``scale`` are 0-d arrays of the network's dtype: as operands they give the
    same results as Python floats, with less overhead per NumPy call (it adds up on tiny batches).
    """

    __slots__ = ("dtype", "activation", "drop_rate", "scale", "keep", "h_drop", "h", "z", "dh", "ones",
                 "product_z", "product_dW", "product_dh")

    def __init__(self, n: int, fan_in: int, fan_out: int, drop_rate: float, activation: str | None,
                 first: bool, dtype: np.dtype, blas: bool) -> None:
        self.dtype = dtype
        self.activation = activation  # None for the output layer
        dropout = drop_rate > 0
        self.drop_rate = np.array(drop_rate, dtype=dtype) if dropout else None
        self.scale = np.array(1.0 / (1.0 - drop_rate), dtype=dtype)
        self.keep = np.empty((n, fan_in), dtype=dtype) if dropout else None
        self.h_drop = np.empty((n, fan_in), dtype=dtype) if dropout else None
        self.h: np.ndarray | None = None
        self.z = np.empty((n, fan_out), dtype=dtype)
        self.dh = None if first else np.empty((n, fan_in), dtype=dtype)
        self.ones = np.ones(n, dtype=dtype)  # (n,): ones @ dz sums dz over the batch
        # The matrix products filling z, dL/dW and dh (see product_for).
        self.product_z = product_for(n * fan_out, blas)
        self.product_dW = product_for(fan_in * fan_out, blas)
        self.product_dh = product_for(n * fan_in, blas)


def product_for(size: int, blas: bool):
    """The function computing a product with an output of ``size`` numbers.

    With ``blas``: :func:`blas_matmul`. Otherwise ``np.matmul`` for outputs of 4096 numbers or more,
    else ``np.dot`` (it zero-fills its output before calling BLAS, a wasted pass over a big output;
    ``np.matmul`` skips it but costs more per call on tiny ones).
    """
    if blas:
        return blas_matmul
    return np.matmul if size >= 4096 else np.dot


# ----------------------------------------------------------------------------------------------
# Calling BLAS directly (SciPy's wrappers): c = alpha * a @ b + beta * c in one pass
# ----------------------------------------------------------------------------------------------
# NumPy's products always overwrite their output; BLAS can also add to it (beta = 1), which lets
# the forward pass start from the bias and momentum SGD add each gradient to its velocity in the
# product that computes it, sparing a pass over the output each time. A network uses
# BLAS this way for all its products or for none: NumPy and SciPy each bring their own BLAS with its
# own worker threads, which keep spinning for a while after each product, and on a machine with few
# cores the two sets of workers slow each other down many times over when products alternate.

# Networks whose biggest weight matrix has at least this many numbers use BLAS directly; on smaller
# ones NumPy's products cost less per call.
BLAS_MIN_WEIGHTS = 4096

_BLAS: dict[str, object] = {}


def blas_function(name: str, dtype: np.dtype):
    """SciPy's BLAS routine ``name`` for ``dtype`` (``"gemm"`` -> ``sgemm`` for float32, ``dgemm``
    for float64), imported on first use; None when SciPy is not installed."""
    key = ("s" if dtype == np.float32 else "d") + name
    if key not in _BLAS:
        try:
            from scipy.linalg import blas
        except ImportError:
            return None
        _BLAS[key] = getattr(blas, key)
    return _BLAS[key]


def blas_matmul(a: np.ndarray, b: np.ndarray, *, out: np.ndarray, alpha: float = 1.0,
                beta: float = 0.0) -> np.ndarray:
    """``out = alpha * a @ b + beta * out`` in place, in one call of BLAS ``gemm``; returns ``out``.

    ``a`` (M, K), ``b`` (K, N) and the C-ordered ``out`` (M, N) share one dtype. BLAS works on
    column-major (Fortran-ordered) arrays, and the transpose of a C-ordered array is a
    Fortran-ordered view of the same memory: the call computes the transposed equation
    ``out.T = alpha * b.T @ a.T + beta * out.T`` on such views, so nothing is copied and the result
    lands in ``out``. An operand that is already a transposed view (``h.T``, ``W.T``) is passed as it
    is, with BLAS's flag to transpose it.
    """
    gemm = blas_function("gemm", out.dtype)
    b_t, trans_b = (b.T, 0) if b.flags.c_contiguous else (b, 1)
    a_t, trans_a = (a.T, 0) if a.flags.c_contiguous else (a, 1)
    c = out.T  # (N, M), Fortran-ordered
    if gemm(alpha, b_t, a_t, beta=beta, c=c, trans_a=trans_b, trans_b=trans_a, overwrite_c=1) is not c:
        # The wrapper silently works on a copy of an output it cannot use as it is: never lose a result.
        raise RuntimeError("BLAS gemm did not write its output in place (not a C-ordered array?)")
    return out


def blas_affine(h: np.ndarray, W: np.ndarray, b: np.ndarray, *, out: np.ndarray) -> np.ndarray:
    """``out = h @ W + b`` (N, fan_out): ``b`` copied into every row, then BLAS adds ``h @ W`` to it
    (``beta = 1``), one pass over ``out`` less than adding ``b`` after the product."""
    np.copyto(out, b)
    return blas_matmul(h, W, out=out, beta=1.0)


def blas_column_sums(dz: np.ndarray, ones: np.ndarray, *, out: np.ndarray, beta: float = 0.0) -> np.ndarray:
    """``out = dz.T @ ones + beta * out`` in place: the column sums of ``dz`` (N, K), by BLAS ``gemv``."""
    gemv = blas_function("gemv", out.dtype)
    if gemv(1.0, dz.T, ones, beta=beta, y=out, overwrite_y=1) is not out:
        raise RuntimeError("BLAS gemv did not write its output in place (not a contiguous vector?)")
    return out


class MLP:
    """Weights of a multilayer perceptron plus its forward and backward passes.

    ``W[l]`` has shape (fan_in, fan_out) and ``b[l]`` shape (fan_out,): layer ``l`` computes
    ``z = h @ W[l] + b[l]``. All of them are views into one flat vector :attr:`flat` (in the order of
    :attr:`params`), so an optimiser can update every parameter with a few whole-vector operations.

    A training pass keeps what backward needs in per-layer work arrays, allocated once per batch
    size and reused from batch to batch (no per-batch allocation of activations or masks).
    """

    def __init__(self, spec: MLPSpec, rng: np.random.Generator) -> None:
        self.spec = spec
        self.dtype = np.dtype(spec.dtype)
        self.flat, views = self.new_flat()
        self.W: list[np.ndarray] = views[0::2]
        self.b: list[np.ndarray] = views[1::2]
        for W, b in zip(self.W, self.b):
            W[...] = init_weights(W.shape[0], W.shape[1], spec.init, rng)
            b[...] = 0
        # Per-layer drop rates of the *inputs* to each weight layer: the input layer, then hidden ones.
        self.drop_rates = [float(spec.drop_input), *spec.drop_hidden]
        # Products through BLAS directly (see blas_matmul) for big networks, when SciPy is there.
        self.blas = (max(W.size for W in self.W) >= BLAS_MIN_WEIGHTS
                     and blas_function("gemm", self.dtype) is not None)
        self._work: dict[int, list[LayerWork]] = {}  # batch size N -> work arrays of every layer
        self._train_work: list[LayerWork] = []  # those of the last training pass, for backward

    # -- parameters ---------------------------------------------------------------------------
    @property
    def params(self) -> list[np.ndarray]:
        """All parameter arrays, in a fixed order: W0, b0, W1, b1, ..."""
        return [p for pair in zip(self.W, self.b) for p in pair]

    def new_flat(self) -> tuple[np.ndarray, list[np.ndarray]]:
        """A zero vector laid out like the parameters, and its views shaped like W0, b0, W1, b1, ..."""
        sizes = self.spec.sizes
        shapes = [shape for fan_in, fan_out in zip(sizes[:-1], sizes[1:]) for shape in ((fan_in, fan_out), (fan_out,))]
        flat = np.zeros(sum(math.prod(s) for s in shapes), dtype=self.dtype)
        views, start = [], 0
        for shape in shapes:
            size = math.prod(shape)
            views.append(flat[start:start + size].reshape(shape))
            start += size
        return flat, views

    def owns_flat(self) -> bool:
        """True while every parameter array is still a view into :attr:`flat` (none was replaced)."""
        return all(p.base is self.flat for p in self.params)

    def _new_work(self, n: int) -> list["LayerWork"]:
        """Work arrays of every layer for batches of ``n`` rows (kept for the next batch of that size)."""
        sizes = self.spec.sizes
        last = len(sizes) - 2
        work = self._work[n] = [
            LayerWork(n, fan_in, fan_out, self.drop_rates[layer], self.spec.activation if layer < last else None,
                      layer == 0, self.dtype, self.blas)
            for layer, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:]))
        ]
        return work

    # -- forward / backward --------------------------------------------------------------------
    def forward(self, X: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        """Output pre-activations (N, K) for inputs ``X`` (N, D).

        With ``rng`` the pass is a training pass: dropout masks are drawn from ``rng`` and what the
        backward pass needs is cached. Without ``rng`` it is evaluation: no masks, no rescaling.
        """
        if rng is None:
            return self._evaluate(X)
        if X.dtype != self.dtype:
            X = X.astype(self.dtype)
        n = X.shape[0]
        work = self._train_work = self._work.get(n) or self._new_work(n)
        h = X
        for w, W, b in zip(work, self.W, self.b):
            if w.keep is not None:
                # Inverted dropout on this layer's input h (N, fan_in): keep each unit with
                # probability 1 - drop_rate and scale the survivors by 1 / (1 - drop_rate).
                keep = rng.random(dtype=w.dtype, out=w.keep)  # U[0, 1) (N, fan_in)
                np.greater_equal(keep, w.drop_rate, out=keep)  # 1 kept, 0 dropped
                np.multiply(keep, w.scale, out=keep)  # 1 / (1 - drop_rate) kept, 0 dropped
                h = np.multiply(h, keep, out=w.h_drop)
            w.h = h
            if self.blas:
                z = blas_affine(h, W, b, out=w.z)  # h @ W + b (N, fan_out)
            else:
                z = w.product_z(h, W, out=w.z)  # h @ W (N, fan_out)
                np.add(z, b, out=z)
            h = act_forward(z, w.activation) if w.activation else z
        return h

    def backward(self, dz: np.ndarray, grads: list[np.ndarray], accumulate: bool = False) -> None:
        """Back-propagate dL/dz_out ``dz`` (N, K) through the cached training pass.

        Writes the gradients into ``grads`` (same order and shapes as :attr:`params`). With
        ``accumulate`` (only when :attr:`blas`) it adds them to what ``grads`` holds instead, in the
        products that compute them (BLAS's ``beta = 1``): momentum SGD passes its velocities, so
        that the optimiser neither reads the gradients nor writes the velocities once more.
        """
        work = self._train_work
        beta = 1.0 if accumulate else 0.0
        for layer in range(len(work) - 1, -1, -1):
            w = work[layer]
            if self.blas:
                blas_matmul(w.h.T, dz, out=grads[2 * layer], beta=beta)  # (+)= dL/dW = h.T @ dz (fan_in, fan_out)
                blas_column_sums(dz, w.ones, out=grads[2 * layer + 1], beta=beta)  # (+)= dL/db (fan_out,)
            else:
                w.product_dW(w.h.T, dz, out=grads[2 * layer])  # dL/dW = h.T @ dz (fan_in, fan_out)
                np.dot(w.ones, dz, out=grads[2 * layer + 1])  # dL/db (fan_out,): the column sums of dz
            if layer == 0:
                break
            dh = w.product_dh(dz, self.W[layer].T, out=w.dh)  # dL/dh = dz @ W.T (N, fan_in)
            # dL/dz of the layer below, whose output a (N, fan_in) became this layer's input h after
            # dropout (h = a * keep): dh * keep * f'(z), computed from h where that is shorter.
            below = work[layer - 1]
            if below.activation == "relu":
                # relu'(z) is 1 exactly where a > 0 and dropout passes only the kept units: the
                # gradient passes exactly where h > 0, scaled like the forward pass.
                np.multiply(dh, w.h > 0, out=dh)
                if w.keep is not None:
                    np.multiply(dh, w.scale, out=dh)
            elif w.keep is None:
                act_backward(dh, below.z, below.activation)
            elif below.activation == "sigmoid":
                # keep * a * (1 - a) = h * (1 - a)
                dh *= np.multiply(w.h, np.subtract(ONE[w.dtype], below.z))
            else:  # tanh: keep * (1 - a^2) = keep - h * a
                dh *= np.subtract(w.keep, np.multiply(w.h, below.z))
            dz = dh

    def _evaluate(self, X: np.ndarray) -> np.ndarray:
        """Forward pass without dropout (evaluation): output pre-activations (N, K)."""
        last = len(self.W) - 1
        h = X
        for layer, (W, b) in enumerate(zip(self.W, self.b)):
            if self.blas and h.dtype == self.dtype:
                z = blas_affine(h, W, b, out=np.empty((h.shape[0], W.shape[1]), dtype=self.dtype))
            else:
                z = np.matmul(h, W)
                z += b
            h = act_forward(z, self.spec.activation) if layer < last else z
        return h

    # -- inference -----------------------------------------------------------------------------
    def predict_proba(self, X: np.ndarray, batch_size: int = 4096) -> np.ndarray:
        """Class probabilities (N, n_classes) with dropout off; binary tasks give two columns."""
        out = []
        for start in range(0, X.shape[0], batch_size):
            z = self.forward(np.asarray(X[start:start + batch_size], dtype=self.dtype))
            if z.shape[1] == 1:
                p1 = 1.0 / (1.0 + np.exp(-z))
                out.append(np.hstack([1 - p1, p1]))
            else:
                e = np.exp(z - z.max(axis=1, keepdims=True))
                out.append(e / e.sum(axis=1, keepdims=True))
        if not out:
            return np.zeros((0, max(2, self.spec.n_outputs)), dtype=self.dtype)
        return np.vstack(out)

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predicted class index (N,) with dropout off."""
        return self.predict_proba(X).argmax(axis=1)

    # -- saving and loading (no pickle) ----------------------------------------------------------
    def save(self, path: str) -> None:
        """Write weights and settings to an ``.npz`` file readable with ``allow_pickle=False``."""
        arrays = {f"W{i}": W for i, W in enumerate(self.W)} | {f"b{i}": b for i, b in enumerate(self.b)}
        spec = self.spec
        np.savez(
            path,
            **arrays,
            sizes=np.array(spec.sizes, dtype=np.int64),
            activation=np.array(spec.activation),
            init=np.array(spec.init),
            drop_rates=np.array(self.drop_rates, dtype=np.float64),
            loss=np.array(spec.loss),
            dtype=np.array(spec.dtype),
        )

    @classmethod
    def load(cls, path: str) -> "MLP":
        """Read a model written by :meth:`save`; a damaged or inconsistent file gives a ConfigError."""
        import zipfile

        try:
            with np.load(path, allow_pickle=False) as f:
                data = {k: f[k] for k in f.files}
        except FileNotFoundError:
            raise ConfigError(f"model file not found: got {path!r}; expected an .npz file written by dropout_lab.") from None
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
            raise ConfigError(
                f"cannot read model file {path!r}: it is truncated or not an .npz model written by dropout_lab ({exc})."
            ) from None
        try:
            sizes = [int(s) for s in data["sizes"]]
            rates = [float(r) for r in data["drop_rates"]]
            spec = MLPSpec(
                n_inputs=sizes[0], hidden=sizes[1:-1], n_outputs=sizes[-1],
                activation=str(data["activation"]), init=str(data["init"]),
                drop_input=rates[0], drop_hidden=rates[1:], loss=str(data["loss"]), dtype=str(data["dtype"]),
            )
            model = cls(spec, np.random.default_rng(0))
            for i in range(len(sizes) - 1):
                W, b = data[f"W{i}"], data[f"b{i}"]
                if W.shape != model.W[i].shape or b.shape != model.b[i].shape:
                    raise ConfigError(
                        f"model file {path!r} is inconsistent: layer {i} has weights of shape {W.shape} and "
                        f"bias {b.shape}, expected {model.W[i].shape} and {model.b[i].shape} from sizes {sizes}."
                    )
                model.W[i][...] = W
                model.b[i][...] = b
        except KeyError as exc:
            raise ConfigError(f"model file {path!r} lacks the array {exc}; it was not written by dropout_lab.") from None
        return model


def init_weights(fan_in: int, fan_out: int, init: str, rng: np.random.Generator) -> np.ndarray:
    """Initial weights (fan_in, fan_out): the post's U(-1, 1), Glorot (xavier) or He."""
    if init == "uniform":
        return 2 * rng.random((fan_in, fan_out)) - 1
    if init == "xavier":
        limit = np.sqrt(6.0 / (fan_in + fan_out))
        return rng.uniform(-limit, limit, (fan_in, fan_out))
    if init == "he":
        return rng.standard_normal((fan_in, fan_out)) * np.sqrt(2.0 / fan_in)
    raise bad_value("model.init", init, " | ".join(INITS))
