"""Loudness measurement and normalisation for mono speech.

- Integrated loudness: ITU-R BS.1770-4 (K-weighting, 400 ms blocks, absolute
  and relative gates), in numpy (pyloudnorm is a test-only dependency, used
  there as an independent check).
- True peak: BS.1770-4 Annex 2, 4x oversampling with a polyphase windowed-sinc
  interpolator written in numpy.
- `normalize`: gain to the target integrated loudness, then a look-ahead
  true-peak limiter (smooth gain envelope, never hard clipping). Limiting lowers
  loudness a little, so gain and limiter are iterated until the loudness is
  back within tolerance of the target.

Why a limiter at all: raw espeak speech measures about -18 to -23 LUFS with
peaks within a few dB of full scale, so a plain gain to -16 LUFS would push
peaks over 0 dBFS, far over a -1 dBTP ceiling.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

OVERSAMPLING = 4
# Taps per polyphase branch of the interpolator. 32 keeps the estimate within a
# few hundredths of a dB of an ideal reconstruction for speech-band content.
_TAPS_PER_PHASE = 32
_KAISER_BETA = 8.0

# BS.1770-4 gating.
_BLOCK_S = 0.4
_ABSOLUTE_GATE_LUFS = -70.0
_RELATIVE_GATE_LU = 10.0

# Limiter shape: look-ahead (and attack ramp) and release slope.
_LOOKAHEAD_S = 0.005
_RELEASE_DB_PER_S = 200.0
# The limiter aims slightly under the ceiling so that a measurement with
# another interpolator (and 16-bit rounding later) still reads <= the ceiling.
_CEILING_MARGIN_DB = 0.1
_LOUDNESS_TOLERANCE_LU = 0.1
_MAX_ITERATIONS = 8


def _to_float64_mono(samples: np.ndarray) -> np.ndarray:
    x = np.asarray(samples, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"expected mono samples (1-D array), got shape {x.shape}")
    return x


def db_to_gain(db: float) -> float:
    return float(10.0 ** (db / 20.0))  # float(): typeshed types float ** float as Any (it can be complex)


def gain_to_db(gain: float) -> float:
    return 20.0 * math.log10(gain) if gain > 0 else -math.inf


# --- measurement ---------------------------------------------------------------


def _k_weighting(sample_rate: int) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """The two K-weighting biquads (b, a) for any sample rate.

    Analog parameters fitted to the BS.1770 48 kHz coefficients (as libebur128
    does), mapped with the bilinear transform; at 48 kHz this reproduces the
    standard's tables to ~1e-8.
    """
    # Stage 1: high shelf (head acoustics).
    f0, gain_db, q = 1681.974450955533, 3.999843853973347, 0.7071752369554196
    k = math.tan(math.pi * f0 / sample_rate)
    vh = 10.0 ** (gain_db / 20.0)
    vb = vh**0.4996667741545416
    a0 = 1.0 + k / q + k * k
    shelf_b = np.array([vh + vb * k / q + k * k, 2.0 * (k * k - vh), vh - vb * k / q + k * k]) / a0
    shelf_a = np.array([1.0, 2.0 * (k * k - 1.0) / a0, (1.0 - k / q + k * k) / a0])
    # Stage 2: the RLB high pass.
    f0, q = 38.13547087602444, 0.5003270373238773
    k = math.tan(math.pi * f0 / sample_rate)
    a0 = 1.0 + k / q + k * k
    highpass_b = np.array([1.0, -2.0, 1.0])
    highpass_a = np.array([1.0, 2.0 * (k * k - 1.0) / a0, (1.0 - k / q + k * k) / a0])
    return (shelf_b, shelf_a), (highpass_b, highpass_a)


def _k_weight(x: np.ndarray, sample_rate: int) -> np.ndarray:
    """Apply the K-weighting filter.

    Done in the frequency domain (numpy has no recursive filter and a Python
    loop per sample is slow): the biquads' frequency response times the
    spectrum, with enough zero padding that the IIR tail cannot wrap around
    (both poles decay to < 1e-12 within a few hundred ms even at 8 kHz).
    """
    n_fft = 1 << int(math.ceil(math.log2(len(x) + sample_rate)))
    return np.fft.irfft(np.fft.rfft(x, n_fft) * _k_weighting_response(sample_rate, n_fft), n_fft)[: len(x)]


@lru_cache(maxsize=8)
def _k_weighting_response(sample_rate: int, n_fft: int) -> np.ndarray:
    """The filter's response on the rfft bins: the same few (rate, length) pairs recur for
    every voiceover and its check, and this is half the cost of the filter (2 MB each)."""
    z = np.exp(-1j * np.pi * np.arange(n_fft // 2 + 1) / (n_fft // 2))  # z^-1 on the bins
    response: np.ndarray = np.ones_like(z)
    for b, a in _k_weighting(sample_rate):
        response *= (b[0] + b[1] * z + b[2] * z * z) / (a[0] + a[1] * z + a[2] * z * z)
    response.flags.writeable = False  # shared between calls
    return response


def integrated_loudness(samples: np.ndarray, sample_rate: int) -> float:
    """ITU-R BS.1770-4 integrated loudness (mono) in LUFS; -inf for silence.

    400 ms blocks with 75 % overlap, absolute gate at -70 LUFS, relative gate
    10 LU below the absolute-gated loudness. A signal shorter than one block
    is measured as a single block of its own length (the standard defines no
    value for it).
    """
    x = _to_float64_mono(samples)
    if not np.any(x):
        return -math.inf
    weighted = _k_weight(x, sample_rate)
    block = min(len(x), int(round(_BLOCK_S * sample_rate)))
    step = max(1, int(round(_BLOCK_S * sample_rate / 4)))
    csum = np.concatenate([[0.0], np.cumsum(weighted * weighted)])
    starts = np.arange(0, len(x) - block + 1, step)
    power = (csum[starts + block] - csum[starts]) / block
    with np.errstate(divide="ignore"):
        block_lufs = -0.691 + 10.0 * np.log10(power)
    gated = power[block_lufs > _ABSOLUTE_GATE_LUFS]
    if len(gated) == 0:
        return -math.inf
    relative_gate = -0.691 + 10.0 * math.log10(gated.mean()) - _RELATIVE_GATE_LU
    gated = power[(block_lufs > _ABSOLUTE_GATE_LUFS) & (block_lufs > relative_gate)]
    return float(-0.691 + 10.0 * math.log10(gated.mean()))


@lru_cache(maxsize=4)
def _interpolator(factor: int = OVERSAMPLING) -> tuple[np.ndarray, ...]:
    """Polyphase branches of a Kaiser-windowed sinc low-pass (cutoff = input Nyquist).

    The prototype has odd length 2*half+1 so its delay is a whole number of
    input samples; branch k yields the output samples at offset k/factor.
    """
    half = factor * _TAPS_PER_PHASE // 2
    n = np.arange(-half, half + 1)
    prototype = np.sinc(n / factor) * np.kaiser(len(n), _KAISER_BETA)
    branches = []
    for k in range(factor):
        first = (k + half) % factor
        branches.append(prototype[first::factor].copy())
    return tuple(branches)


def oversample(samples: np.ndarray, factor: int = OVERSAMPLING) -> np.ndarray:
    """Band-limited interpolation by `factor`: out[factor*n + k] ~ x(n + k/factor)."""
    x = _to_float64_mono(samples)
    if len(x) == 0:
        return x
    half = factor * _TAPS_PER_PHASE // 2
    out = np.empty(len(x) * factor)
    for k, branch in enumerate(_interpolator(factor)):
        first = (k + half) % factor
        delay = (k + half - first) // factor
        full = np.convolve(x, branch)
        out[k::factor] = full[delay : delay + len(x)]
    return out


def true_peak(samples: np.ndarray) -> float:
    """Linear true peak (max |x| of the 4x oversampled signal, and of x itself)."""
    x = _to_float64_mono(samples)
    if len(x) == 0:
        return 0.0
    return float(max(np.max(np.abs(oversample(x))), np.max(np.abs(x))))


def true_peak_dbtp(samples: np.ndarray) -> float:
    return gain_to_db(true_peak(samples))


def measure(samples: np.ndarray, sample_rate: int) -> tuple[float, float]:
    """(integrated loudness in LUFS, true peak in dBTP)."""
    return integrated_loudness(samples, sample_rate), true_peak_dbtp(samples)


# --- limiter -------------------------------------------------------------------


def _true_peak_envelope(x: np.ndarray, factor: int = OVERSAMPLING) -> np.ndarray:
    """Per input sample, the largest |value| of the oversampled signal within one
    sample either side, so inter-sample peaks are charged to both neighbours."""
    up = np.abs(oversample(x, factor))
    padded = np.concatenate([np.zeros(factor - 1), up, np.zeros(factor)])
    windows = np.lib.stride_tricks.sliding_window_view(padded, 2 * factor - 1)
    envelope: np.ndarray = windows[::factor][: len(x)].max(axis=1)
    return envelope


def _forward_min(values: np.ndarray, width: int) -> np.ndarray:
    """out[n] = min(values[n : n + width]) (the look-ahead)."""
    padded = np.concatenate([values, np.full(width - 1, values[-1])])
    minima: np.ndarray = np.lib.stride_tricks.sliding_window_view(padded, width).min(axis=1)
    return minima


def _backward_mean(values: np.ndarray, width: int) -> np.ndarray:
    """out[n] = mean(values[n - width + 1 : n + 1]) (the attack ramp)."""
    padded = np.concatenate([np.full(width - 1, values[0]), values])
    csum = np.concatenate([[0.0], np.cumsum(padded)])
    means: np.ndarray = (csum[width:] - csum[:-width]) / width
    return means


def _release(gain_db: np.ndarray, db_per_sample: float) -> np.ndarray:
    """Let the gain recover at most `db_per_sample` per sample after a dip.

    out[n] = min over k <= n of (gain_db[k] + rate * (n - k)): a linear-in-dB
    release, computed without a Python loop via a running minimum.
    """
    ramp = db_per_sample * np.arange(len(gain_db))
    released: np.ndarray = np.minimum.accumulate(gain_db - ramp) + ramp
    return released


def limit(samples: np.ndarray, sample_rate: int, ceiling_dbtp: float) -> np.ndarray:
    """Look-ahead true-peak limiter (offline, zero latency).

    Required gain per sample r[n] = min(1, ceiling / true-peak envelope). The
    applied gain is r run through a forward minimum over the look-ahead window,
    a linear-in-dB release, then a moving average of the same window. Each
    stage can only lower the gain, and averaging the look-ahead minimum over
    that window keeps every sample's gain <= its r[n], so the peak lands under
    the ceiling with smooth ramps on both sides rather than a clipped edge.
    """
    x = _to_float64_mono(samples)
    if len(x) == 0:
        return x
    ceiling = db_to_gain(ceiling_dbtp)
    envelope = _true_peak_envelope(x)
    required = np.minimum(1.0, ceiling / np.maximum(envelope, 1e-12))
    if np.all(required >= 1.0):
        return x.copy()
    width = max(1, int(round(_LOOKAHEAD_S * sample_rate)))
    held = _forward_min(required, width)
    released_db = _release(20.0 * np.log10(held), _RELEASE_DB_PER_S / sample_rate)
    gain = _backward_mean(10.0 ** (released_db / 20.0), width)
    limited: np.ndarray = x * gain
    return limited


# --- normalisation -------------------------------------------------------------


def normalize(
    samples: np.ndarray,
    sample_rate: int,
    target_lufs: float = -16.0,
    true_peak_dbtp: float = -1.0,
) -> tuple[np.ndarray, float, float]:
    """Gain to `target_lufs` integrated, limited to `true_peak_dbtp` true peak.

    Returns (float32 samples, loudness in LUFS, true peak in dBTP), both
    measured on the returned samples. Iterates gain and limiter so the result
    lands within ~0.1 LU of the target unless the ceiling makes that
    impossible, in which case the closest attempt is returned. Silence is
    returned unchanged (its loudness is -inf).
    """
    x = _to_float64_mono(samples)
    loudness = integrated_loudness(x, sample_rate)
    if not math.isfinite(loudness):
        return x.astype(np.float32), loudness, _true_peak_db(x)

    ceiling_db = true_peak_dbtp - _CEILING_MARGIN_DB
    gain_db = target_lufs - loudness
    previous: tuple[float, float] | None = None  # (gain_db, loudness) of the last try
    best: tuple[float, np.ndarray, float, float] | None = None  # (|error|, y, lufs, dbtp)
    for _ in range(_MAX_ITERATIONS):
        y, loudness, peak_db = _limit_until_under(x * db_to_gain(gain_db), sample_rate, ceiling_db)
        error = target_lufs - loudness
        if best is None or abs(error) < best[0]:
            best = (abs(error), y, loudness, peak_db)
        if abs(error) <= _LOUDNESS_TOLERANCE_LU:
            break
        step = _gain_step(error, (gain_db, loudness), previous)
        previous = (gain_db, loudness)
        gain_db += step
    assert best is not None
    _, y, loudness, peak_db = best
    return y.astype(np.float32), loudness, peak_db


def _gain_step(error: float, current: tuple[float, float], previous: tuple[float, float] | None) -> float:
    """Secant step on loudness(gain). Limiting makes the slope < 1 dB/dB, so a
    plain `gain += error` would creep up on the target over many iterations."""
    slope = 1.0
    if previous is not None and abs(current[0] - previous[0]) > 1e-6:
        slope = (current[1] - previous[1]) / (current[0] - previous[0])
    slope = min(1.0, max(0.2, slope))
    # Cap single steps: a huge step would make the limiter squash everything.
    return max(-12.0, min(12.0, error / slope))


def _limit_until_under(y: np.ndarray, sample_rate: int, ceiling_db: float) -> tuple[np.ndarray, float, float]:
    """Run the limiter, lowering its internal ceiling by any residual overshoot.

    The gain envelope is computed from the un-limited signal; once gain is
    applied the interpolated peaks move slightly, so verify and retry.
    Returns (limited samples, loudness, true peak dBTP).
    """
    aim = ceiling_db
    for _ in range(4):
        limited = limit(y, sample_rate, aim)
        peak_db = _true_peak_db(limited)
        if peak_db <= ceiling_db:
            break
        aim -= (peak_db - ceiling_db) + 0.01
    else:
        # Still over (not seen in practice): a plain gain makes the ceiling a
        # guarantee, at the cost of a little loudness.
        limited = limited * db_to_gain(ceiling_db - peak_db)
        peak_db = _true_peak_db(limited)
    return limited, integrated_loudness(limited, sample_rate), peak_db


# `normalize` has a parameter named `true_peak_dbtp` (its public signature), which
# shadows the function of that name inside it.
_true_peak_db = true_peak_dbtp
