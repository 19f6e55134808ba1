"""Perceptual hashes of images and the near-duplicate pairs they reveal (check 2)."""

import numpy as np


def _to_gray8(img):
    img = img.mean(axis=0) if img.ndim == 3 else img
    return np.clip(np.round(img * 255.0), 0, 255).astype(np.uint8)


def _shifted(img, dy, dx):
    """``img`` moved by (dy, dx) pixels, edges replicated."""
    if dy == 0 and dx == 0:
        return img
    h, w = img.shape
    pad = np.pad(img, ((abs(dy), abs(dy)), (abs(dx), abs(dx))), mode="edge")
    top, left = abs(dy) - dy, abs(dx) - dx
    return pad[top : top + h, left : left + w]


def _hash_words(bits):
    """Pack boolean hash bits (n, n_bits) into uint64 words (n, n_words)."""
    packed = np.packbits(bits, axis=-1)
    pad = (-packed.shape[-1]) % 8
    if pad:
        packed = np.concatenate([packed, np.zeros((*packed.shape[:-1], pad), np.uint8)], axis=-1)
    return np.ascontiguousarray(packed).view(np.uint64)


def perceptual_hashes(X, hash_size, shift):
    """phash and dhash words of each image and of its shifted copies.

    Returns ``base`` of shape (2, n, n_words) and ``variants`` of shape
    (2, n, n_shifts, n_words), hash 0 being phash and hash 1 dhash.
    """
    import imagehash
    from PIL import Image

    offsets = [(dy, dx) for dy in (-shift, 0, shift) for dx in (-shift, 0, shift)]
    n = len(X)
    n_bits = hash_size * hash_size
    bits = np.zeros((2, n, len(offsets), n_bits), dtype=bool)
    for i in range(n):
        gray = _to_gray8(X[i])
        for v, (dy, dx) in enumerate(offsets):
            pil = Image.fromarray(_shifted(gray, dy, dx))
            bits[0, i, v] = imagehash.phash(pil, hash_size=hash_size).hash.ravel()
            bits[1, i, v] = imagehash.dhash(pil, hash_size=hash_size).hash.ravel()
    words = _hash_words(bits)
    base = words[:, :, offsets.index((0, 0))]
    return base, words


def near_duplicate_pairs(base, variants, max_distance, block_bytes=2**26):
    """Pairs (i < j) whose best-aligned phash and dhash both differ by <= max_distance bits.

    The distance of i to j is, over the shifted copies of i, the smallest
    ``max(phash distance, dhash distance)`` to the unshifted j; the pair's
    distance is the smaller of both directions. Vectorised XOR + popcount in
    row blocks, so memory stays bounded for thousands of images.
    """
    _, n, n_var, n_words = variants.shape
    block = max(1, int(block_bytes // max(1, n * n_var * n_words * 8)))
    found = {}
    for start in range(0, n, block):
        stop = min(n, start + block)
        # (2, b, n_var, 1, W) ^ (2, 1, 1, n, W) -> popcount summed over words.
        d = np.bitwise_count(variants[:, start:stop, :, None, :] ^ base[:, None, None, :, :])
        d = d.sum(axis=-1, dtype=np.int32)  # (2, b, n_var, n)
        combined = d.max(axis=0).min(axis=1)  # (b, n)
        p_min = d[0].min(axis=1)
        d_min = d[1].min(axis=1)
        rows, cols = np.nonzero(combined <= max_distance)
        for r, j in zip(rows.tolist(), cols.tolist()):
            i = start + r
            if i == j:
                continue
            key = (min(i, j), max(i, j))
            dist = (int(combined[r, j]), int(p_min[r, j]), int(d_min[r, j]))
            found[key] = min(found.get(key, dist), dist)
    return found
