"""Waveform <-> model tensor, and chunked processing with overlap-add.

The models see a short-time Fourier transform as a real tensor of shape
``(frames, 1025, 2)``: real and imaginary parts of an STFT with n_fft 2048,
hop 1024, a periodic Hann window and centre padding, at 22050 Hz.

The analysis is ``librosa.stft``, run block by block over zero-padded
segments of the signal (the values of one centred transform of the whole
signal, to float32 rounding); :func:`istft` is ``librosa.istft``. The
synthesis inside :func:`process` is our own: ``librosa.istft`` needs the whole
STFT at once, while a job's output arrives chunk by chunk and is overlap-added
as it comes, so memory stays bounded by the chunk (measured in
``benchmarks/librosa_compare.py`` and the README).

Long audio is never turned into one huge tensor. :func:`process` cuts the
frame sequence into chunks, gives each chunk a few frames of context on either
side so that convolutions near a chunk edge see the same neighbours they would
in one pass, runs every model on each chunk, and overlap-adds the inverse
transform of the kept frames straight into the output waveforms. Memory is
bounded by the chunk size, and with context at least the model's receptive
field a deterministic model gives the same samples as a single pass: there
are no seams to hear.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import librosa
import numpy as np
import scipy.fft

N_FFT = 2048
HOP = 1024
N_BINS = N_FFT // 2 + 1
WINDOW = "hann"
"""Window of the analysis and synthesis, as librosa names it (periodic)."""
_WINDOW = librosa.filters.get_window(WINDOW, N_FFT, fftbins=True).astype(np.float64)
_WINDOW32 = _WINDOW.astype(np.float32)

DEFAULT_CHUNK_FRAMES = 512
"""Frames per chunk (about 24 s of audio): large enough that a 30 s clip costs
one extra chunk of context at most, small enough to bound memory."""
DEFAULT_CONTEXT_FRAMES = 16
"""Context frames on each side of a chunk (about 0.7 s); must cover the model's
receptive field along time for seamless output."""


def n_frames(n_samples: int) -> int:
    """Number of STFT frames of a centre-padded signal of ``n_samples`` samples.

    One frame more than the minimum where needed, so that every sample lies
    under two windows and the inverse never divides by a vanishing window sum.
    """
    return 1 + -(-n_samples // HOP)


def _segment(y: np.ndarray, start: int, stop: int) -> np.ndarray:
    """The samples that frames ``start .. stop - 1`` of the centre-padded signal cover.

    Zero-padded where they reach past either end of ``y``; only this stretch
    is copied, so memory stays bounded by the block size however long the
    signal is.
    """
    lo = start * HOP - N_FFT // 2  # index into y of the first sample of frame `start`
    hi = (stop - 1) * HOP + N_FFT - N_FFT // 2
    seg = np.zeros(hi - lo, dtype=np.float32)
    a, b = max(lo, 0), min(hi, len(y))
    if b > a:
        seg[a - lo : b - lo] = y[a:b]
    return seg


def _to_tensor(spec: np.ndarray) -> np.ndarray:
    out = np.empty(spec.shape + (2,), dtype=np.float32)
    out[..., 0] = spec.real
    out[..., 1] = spec.imag
    return out


def _analyse(y: np.ndarray, start: int, stop: int) -> np.ndarray:
    """Frames ``start .. stop - 1`` of the STFT as the model tensor, shape ``(stop - start, 1025, 2)``."""
    spec = librosa.stft(_segment(y, start, stop), n_fft=N_FFT, hop_length=HOP, window=WINDOW, center=False)
    return _to_tensor(spec.T)


def stft(y: np.ndarray) -> np.ndarray:
    """STFT of a mono waveform as the model tensor.

    Parameters
    ----------
    y : np.ndarray, shape (n_samples,)
        Mono waveform at 22050 Hz.

    Returns
    -------
    S : np.ndarray, shape (n_frames(n_samples), 1025, 2), float32
        Real and imaginary parts.
    """
    y = np.asarray(y, dtype=np.float32)
    if y.ndim != 1:
        raise ValueError(f"expected a mono waveform of shape (n,), got shape {y.shape}")
    return _analyse(y, 0, n_frames(len(y)))


def iter_stft(y: np.ndarray, *, block: int = DEFAULT_CHUNK_FRAMES):
    """The STFT of a long waveform in blocks of at most ``block`` frames.

    Yields
    ------
    np.ndarray, shape (<= block, 1025, 2), float32
        Consecutive frames of :func:`stft`, in order.
    """
    y = np.asarray(y, dtype=np.float32)
    n = n_frames(len(y))
    for start in range(0, n, block):
        yield _analyse(y, start, min(n, start + block))


_W2_64 = _WINDOW**2
_W2 = _W2_64.astype(np.float32)
_W2_BOTH = (_W2_64[:HOP] + _W2_64[HOP:]).astype(np.float32)  # a sample under two frames: summed in double


def _window_sum(n: int, first: int, stop: int) -> np.ndarray:
    """Sum of the squared windows of ``n`` frames at padded sample indices ``first .. stop - 1`` (float32)."""
    start = first % HOP
    out = np.tile(_W2_BOTH, -(-(start + stop - first) // HOP))[start : start + stop - first]
    # Samples under one frame only: before the second frame starts, and under the last frame's second half.
    lo, hi = first, min(stop, HOP)
    if hi > lo:
        out[: hi - first] = _W2[lo:hi]
    lo, hi = max(first, n * HOP), min(stop, (n + 1) * HOP)
    if hi > lo:
        out[lo - first : hi - first] = _W2[HOP + lo - n * HOP : HOP + hi - n * HOP]
    lo = max(first, (n + 1) * HOP)
    if stop > lo:
        out[lo - first :] = 0.0
    return out


def istft(S: np.ndarray, length: int) -> np.ndarray:
    """Inverse of :func:`stft` (``librosa.istft``, weighted overlap-add).

    Parameters
    ----------
    S : np.ndarray, shape (frames, 1025, 2)
        Model tensor.
    length : int
        Number of samples to return (the length given to :func:`stft`).

    Returns
    -------
    y : np.ndarray, shape (length,), float32
    """
    S = np.asarray(S)
    if S.ndim != 3 or S.shape[1:] != (N_BINS, 2):
        raise ValueError(f"expected a model tensor of shape (frames, {N_BINS}, 2), got shape {S.shape}")
    spec = (S[..., 0].astype(np.float32) + 1j * S[..., 1].astype(np.float32)).T  # complex64
    y = librosa.istft(spec, hop_length=HOP, n_fft=N_FFT, window=WINDOW, center=True, length=length)
    return y.astype(np.float32)


class _Synthesis:
    """Overlap-add accumulator for frames that arrive chunk by chunk, in order.

    In float32 throughout, like the model's tensor (the inverse FFT in single
    precision, of the tensor viewed as complex without a copy): a 30 s output
    costs about 5 ms instead of 11 in float64, and differs from
    ``librosa.istft`` by about 1e-7. Samples no later frame can reach are
    divided by the window sum and written to the output at once; only the
    half frame still open is kept. Every output sample is the sum of at most
    two windowed frames, whatever the chunking, so memory is the output plus
    one chunk and the result is the same, bit for bit, as accumulating the
    whole signal first.
    """

    def __init__(self, n: int, length: int) -> None:
        self.n = n
        self.length = length
        self.out = np.empty(length, dtype=np.float32)
        self.base = 0  # padded index of acc[0]; every sample before it is final
        self.acc = np.zeros(0, dtype=np.float32)

    def add(self, S: np.ndarray, first: int) -> None:
        if first * HOP != self.base:
            raise ValueError(f"frames must arrive in order: expected frame {self.base // HOP}, got {first}")
        spec = np.ascontiguousarray(S, dtype=np.float32).view(np.complex64)[..., 0]
        frames = scipy.fft.irfft(spec, n=N_FFT, axis=1)
        frames *= _WINDOW32
        k = frames.shape[0]
        if k == 0:
            return
        acc = np.zeros((k - 1) * HOP + N_FFT, dtype=np.float32)
        acc[: self.acc.size] = self.acc
        # Frames overlap by half: add even and odd frames as two flat, non-overlapping runs.
        for parity in range(N_FFT // HOP):
            sel = frames[parity::2]
            if sel.size:
                off = parity * HOP
                acc[off : off + sel.shape[0] * N_FFT].reshape(sel.shape[0], N_FFT)[:] += sel
        self.acc = acc
        self._emit(self.base + k * HOP)

    def _emit(self, stop: int) -> None:
        # Padded samples [base, stop) are final: write their output samples.
        lo, hi = max(self.base, N_FFT // 2), min(stop, N_FFT // 2 + self.length)
        if hi > lo:
            y = self.acc[lo - self.base : hi - self.base]
            np.divide(y, _window_sum(self.n, lo, hi), out=self.out[lo - N_FFT // 2 : hi - N_FFT // 2])
        self.acc = self.acc[stop - self.base :].copy()
        self.base = stop

    def result(self) -> np.ndarray:
        if self.base // HOP < self.n:
            raise ValueError(f"only {self.base // HOP} of {self.n} frames were added")
        self._emit(self.base + self.acc.size)
        return self.out


@dataclass(frozen=True)
class Chunk:
    """One chunk of the frame sequence.

    Attributes
    ----------
    start, stop : int
        Frames fed to the model, context included (``stop - start`` frames).
    keep_start, keep_stop : int
        Frames of this chunk whose output is kept (absolute frame indices).
    """

    start: int
    stop: int
    keep_start: int
    keep_stop: int


def plan_chunks(
    n: int,
    *,
    chunk_frames: int = DEFAULT_CHUNK_FRAMES,
    context: int = DEFAULT_CONTEXT_FRAMES,
    exact: bool = False,
) -> list[Chunk]:
    """Cut ``n`` frames into chunks of at most ``chunk_frames`` frames, context included.

    Parameters
    ----------
    n : int
        Total number of frames (> 0).
    chunk_frames : int, keyword-only
        Largest number of frames fed to the model at once.
    context : int, keyword-only
        Frames of context on each inner chunk edge.
    exact : bool, keyword-only
        Make every chunk exactly ``chunk_frames`` long (for models with a
        fixed input length) by extending its context into real frames rather
        than padding; only a signal shorter than one chunk stays shorter.

    Returns
    -------
    list of Chunk
        The chunks, in order; their kept ranges tile ``[0, n)`` exactly.
    """
    if n <= 0:
        raise ValueError(f"need at least one frame, got {n}")
    if chunk_frames <= 2 * context:
        raise ValueError(
            f"chunk_frames ({chunk_frames}) must exceed twice the context ({context})"
        )
    if n <= chunk_frames:
        return [Chunk(0, n, 0, n)]
    core = chunk_frames - 2 * context
    chunks = []
    keep = 0
    while keep < n:
        first = keep == 0
        # The first chunk needs no left context, so it keeps more frames.
        keep_stop = min(n, keep + (core + context if first else core))
        start = max(0, keep - context)
        stop = min(n, keep_stop + context)
        if exact and stop - start < chunk_frames:
            start = max(0, stop - chunk_frames)
            stop = min(n, start + chunk_frames)
        chunks.append(Chunk(start, stop, keep, keep_stop))
        keep = keep_stop
    return chunks


Transform = Callable[[np.ndarray, int], np.ndarray]
"""A chunk transform: ``(tensor of shape (frames, 1025, 2), chunk index) -> same shape``."""


def process(
    y: np.ndarray,
    transforms: Sequence[Transform],
    *,
    chunk_frames: int = DEFAULT_CHUNK_FRAMES,
    context: int = DEFAULT_CONTEXT_FRAMES,
    exact: bool = False,
    on_chunk: Callable[[int, int], None] | None = None,
    chunks: Sequence[Chunk] | None = None,
) -> list[np.ndarray]:
    """Run several spectral transforms over a waveform, chunk by chunk.

    The STFT of each chunk is computed once and handed to every transform, and
    each transform's output frames are overlap-added into its own waveform.

    Parameters
    ----------
    y : np.ndarray, shape (n_samples,)
        Mono waveform at 22050 Hz.
    transforms : sequence of callables
        Each maps a tensor of shape ``(frames, 1025, 2)`` and the chunk index
        to a tensor of the same shape.
    chunk_frames, context : int, keyword-only
        See :func:`plan_chunks`.
    exact : bool, keyword-only
        Chunks of exactly ``chunk_frames`` frames (see :func:`plan_chunks`).
    on_chunk : callable or None, keyword-only
        Called as ``on_chunk(done, total)`` after each chunk.
    chunks : sequence of Chunk or None, keyword-only
        A plan of one's own (kept ranges tiling ``[0, n)`` in order) instead
        of :func:`plan_chunks`'s; the transforms get indices into it.

    Returns
    -------
    list of np.ndarray, each shape (n_samples,), float32
        One waveform per transform.
    """
    y = np.asarray(y, dtype=np.float32)
    if y.ndim != 1 or y.size == 0:
        raise ValueError(f"expected a non-empty mono waveform, got shape {y.shape}")
    n = n_frames(len(y))
    if chunks is None:
        chunks = plan_chunks(n, chunk_frames=chunk_frames, context=context, exact=exact)
    outs = [_Synthesis(n, len(y)) for _ in transforms]
    for i, c in enumerate(chunks):
        tensor = _analyse(y, c.start, c.stop)
        lo, hi = c.keep_start - c.start, c.keep_stop - c.start
        for syn, fn in zip(outs, transforms):
            res = np.asarray(fn(tensor, i))
            if res.shape != tensor.shape:
                raise ValueError(
                    f"a transform returned shape {res.shape} for input shape {tensor.shape}"
                )
            syn.add(res[lo:hi], c.keep_start)
        if on_chunk is not None:
            on_chunk(i + 1, len(chunks))
    return [syn.result() for syn in outs]
