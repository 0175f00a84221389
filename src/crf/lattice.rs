//! Gaussian filtering in a feature space of dimension `d` with the permutohedral lattice
//! (Adams, Baek & Davis, "Fast High-Dimensional Filtering Using the Permutohedral Lattice", 2010).
//!
//! A dense CRF needs, for every voxel `i`, `Σ_j exp(-|f_i - f_j|² / 2) v_j` over *all* voxels `j`:
//! O(N²) done directly, hopeless for millions of voxels. The lattice makes it O(N·d²): each feature
//! point is lifted onto the hyperplane `Σx = 0` of R^(d+1), where the permutohedral lattice tiles
//! space with simplices; its value is *splatted* with barycentric weights onto the d+1 corners of
//! its simplex, the lattice values are *blurred* with a `[1 2 1]/4` kernel along each of the d+1
//! lattice directions, and each point *slices* (gathers) the blurred values back with the same
//! weights. Only lattice points touched by the data exist, held in a hash table.
//!
//! The result is approximate: splat + blur + slice is a piecewise-linear, slightly anisotropic
//! kernel whose width matches the Gaussian's only on average. Dividing by the filtered constant
//! (what mean-field uses, see [`super::Filter::filter_normalised`]) cancels most of the amplitude error;
//! `tests/crf.rs` measures what remains against an exact O(N²) filter.
//!
//! The lattice depends only on the features, never on the values, so everything value-independent
//! (corner indices and weights per point, neighbour indices per lattice point, the normaliser) is
//! computed once in [`Lattice::new`] and reused by every mean-field iteration.

use crate::error::{Error, Result, try_filled, try_vec};
use crate::parallel::{for_each_chunk, for_each_item, map_ranges, threads};

/// Largest feature dimension accepted. The per-point work is O(d²) on fixed-size stack arrays;
/// a dense CRF uses 3 (position) and 4 (position + intensity).
pub const MAX_DIM: usize = 8;

/// Largest feature magnitude accepted, in kernel widths. Beyond it the lifted coordinates lose
/// their fractional part in f32 (and would eventually overflow the integer keys); a real volume
/// spans a few hundred kernel widths at most.
pub const MAX_FEATURE: f32 = 1.0e5;

/// Marks an empty hash table slot.
const EMPTY: u32 = u32::MAX;

/// A permutohedral lattice built over `n` feature points of dimension `d`.
#[derive(Debug, Clone)]
pub struct Lattice {
    d: usize,
    n: usize,
    /// Number of lattice vertices; index `m` is a vertex that is always zero and stands in for
    /// blur neighbours that do not exist, so the blur loop needs no branch.
    m: usize,
    /// `n × (d+1)` corner vertex indices per point.
    corners: Vec<u32>,
    /// `n × (d+1)` barycentric weights, matching `corners`.
    weights: Vec<f32>,
    /// `m × (d+1) × 2` vertex indices of the − and + neighbour along each lattice direction.
    neighbours: Vec<u32>,
    /// `1 / filter(1)` per point: the normaliser of [`super::Filter::filter_normalised`]. The
    /// division cancels the lattice's position-dependent gain (edges of the data, sparse regions),
    /// which is where most of its error against a true Gaussian lies.
    inv_norm: Vec<f32>,
}

/// The lattice's size limits, fixed before anything is allocated.
#[derive(Clone, Copy)]
struct Budget {
    /// Most lattice vertices the lattice may hold within its memory limit.
    max_vertices: usize,
    /// Most hash table slots (a power of two, at least twice `max_vertices`).
    max_slots: usize,
}

impl Budget {
    /// Limits for `n` points in `d` dimensions within `max_bytes`.
    ///
    /// A point touches d+1 vertices, so `n·(d+1)` vertices always suffice; when that worst case does
    /// not fit the budget the ceiling is what does, and construction fails cleanly if the data
    /// really needs more (features varying faster than the kernel width everywhere).
    fn new(n: usize, d: usize, max_bytes: usize) -> Result<Self> {
        let per_point = (d + 1) * 8 + 4; // corners + weights + normaliser
        // keys (d i32, transient) + neighbours (2(d+1) u32) + two value buffers + ≤ 4 table slots,
        // + one splat buffer per extra part
        let per_vertex = 4 * d + 8 * (d + 1) + 8 + 16 + 4 * (SPLAT_PARTS - 1);
        // + one block of located points (features, corner keys) while building
        let block = BLOCK.min(n) * ((d + 1) * d + d) * 4;
        let fixed = n.saturating_mul(per_point).saturating_add(block);
        if fixed > max_bytes {
            return Err(Error::TooLarge(format!(
                "the CRF lattice for {n} voxels in {d} feature dimensions needs {} MB for its \
                 per-voxel tables, over the {} MB allowed: crop the volume or raise the memory limit",
                fixed / 1_000_000,
                max_bytes / 1_000_000
            )));
        }
        let worst = n.saturating_mul(d + 1).max(1);
        let affordable = (max_bytes - fixed) / per_vertex;
        // (capped at 2^28 so slot counts stay far from overflow on 32-bit wasm)
        let max_vertices = worst.min(affordable).min(1 << 28);
        if max_vertices < d + 1 {
            return Err(Error::TooLarge(format!(
                "the CRF lattice for {n} voxels in {d} feature dimensions leaves no room for lattice \
                 points within {} MB: crop the volume or raise the memory limit",
                max_bytes / 1_000_000
            )));
        }
        Ok(Budget {
            max_vertices,
            max_slots: (2 * max_vertices).next_power_of_two(),
        })
    }
}

/// Open-addressing hash table from lattice keys (the first `d` integer coordinates; the last is
/// minus their sum) to dense vertex indices.
///
/// Its ceiling is fixed up front from `n`, `d` and the memory limit ([`Budget`]), but it starts
/// small and doubles towards that ceiling as vertices arrive: real volumes touch far fewer
/// vertices than the `n·(d+1)` worst case (118 k rather than 11 M for a 3 mm kernel on a brain
/// box), and allocating and clearing the worst case would cost more than the whole filter.
struct KeyTable {
    d: usize,
    slots: Vec<u32>,
    keys: Vec<i32>,
    budget: Budget,
}

impl KeyTable {
    fn new(d: usize, budget: Budget) -> Result<Self> {
        let start = budget.max_slots.min(1 << 14);
        Ok(KeyTable {
            d,
            slots: try_filled(start, EMPTY, "the CRF lattice hash table")?,
            keys: Vec::new(),
            budget,
        })
    }

    fn len(&self) -> usize {
        self.keys.len() / self.d
    }

    fn hash(key: &[i32]) -> usize {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for &k in key {
            h = (h ^ (k as u32 as u64)).wrapping_mul(0x0000_0100_0000_01b3);
        }
        // Keep high bits (the well-mixed ones), also on 32-bit wasm where usize is narrower.
        ((h ^ (h >> 29)).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 24) as usize
    }

    /// Slot holding `key`, or the empty slot where it would go.
    fn probe(&self, key: &[i32]) -> usize {
        let mask = self.slots.len() - 1;
        let mut slot = Self::hash(key) & mask;
        loop {
            let entry = self.slots[slot];
            if entry == EMPTY {
                return slot;
            }
            let stored = &self.keys[entry as usize * self.d..][..self.d];
            if same_key(stored, key) {
                return slot;
            }
            slot = (slot + 1) & mask;
        }
    }

    /// Index of `key`, or `None`.
    fn get(&self, key: &[i32]) -> Option<u32> {
        let entry = self.slots[self.probe(key)];
        (entry != EMPTY).then_some(entry)
    }

    /// Index of `key`, inserting it if absent.
    fn insert(&mut self, key: &[i32]) -> Result<u32> {
        let mut slot = self.probe(key);
        if self.slots[slot] != EMPTY {
            return Ok(self.slots[slot]);
        }
        let index = self.len();
        if index >= self.budget.max_vertices {
            return Err(Error::TooLarge(format!(
                "the CRF lattice needs more than {} points in {} feature dimensions, the most its \
                 memory limit allows: the kernel widths are too small for this volume, or the \
                 volume is too large",
                self.budget.max_vertices, self.d
            )));
        }
        if 2 * (index + 1) > self.slots.len() && self.slots.len() < self.budget.max_slots {
            self.grow()?;
            slot = self.probe(key);
        }
        if self.keys.len() == self.keys.capacity() {
            let extra = (self.keys.len() / 2)
                .max(1024 * self.d)
                .min(self.budget.max_vertices * self.d - self.keys.len());
            self.keys
                .try_reserve(extra)
                .map_err(|_| Error::OutOfMemory {
                    what: "the CRF lattice keys",
                    bytes: extra * 4,
                })?;
        }
        self.keys.extend_from_slice(key);
        self.slots[slot] = index as u32;
        Ok(index as u32)
    }

    /// Double the slot array (within the ceiling) and re-insert every key.
    fn grow(&mut self) -> Result<()> {
        let size = (self.slots.len() * 2).min(self.budget.max_slots);
        self.slots = try_filled(size, EMPTY, "the CRF lattice hash table")?;
        let mask = size - 1;
        for (index, key) in self.keys.chunks_exact(self.d).enumerate() {
            let mut slot = Self::hash(key) & mask;
            while self.slots[slot] != EMPTY {
                slot = (slot + 1) & mask;
            }
            self.slots[slot] = index as u32;
        }
        Ok(())
    }
}

/// Key equality without an early exit: LLVM turns both `==` on slices and short-circuiting loops
/// into a `memcmp` call, which cost a tenth of the CRF's time on keys of 3–4 integers.
#[inline]
fn same_key(a: &[i32], b: &[i32]) -> bool {
    a.iter().zip(b).fold(0, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Where one feature point lies in the lattice: its simplex and barycentric weights.
struct Simplex {
    /// The remainder-0 corner of the enclosing simplex.
    origin: [i32; MAX_DIM + 1],
    /// Rank of each coordinate of the offset from `origin` (0 = largest).
    rank: [usize; MAX_DIM + 1],
    /// Barycentric weight of corner k (k = 0..=d).
    bary: [f32; MAX_DIM + 2],
}

impl Simplex {
    /// Lift `feature` (its first `d` values, already divided by the kernel std) onto the
    /// hyperplane and locate it. Always inlined, so that a caller passing a constant `d` gets a
    /// copy with the d² ranking and the fixed-size loops unrolled (see [`locate_block`]).
    #[inline(always)]
    fn locate(feature: &[f32], scale: &[f32], d: usize) -> Simplex {
        let feature = &feature[..d];
        let d1 = (d + 1) as f32;
        // Elevate: x = c · E f with E an orthonormal basis of {Σx = 0}; the basis vector for
        // feature i is (1, …, 1, -(i+1), 0, …) / sqrt((i+1)(i+2)) with i+1 leading ones.
        let mut x = [0f32; MAX_DIM + 1];
        let mut suffix = 0f32;
        for k in (0..=d).rev() {
            if k >= 1 {
                let s = feature[k - 1] * scale[k - 1];
                x[k] = suffix - k as f32 * s;
                suffix += s;
            } else {
                x[0] = suffix;
            }
        }
        // Nearest remainder-0 point: round each coordinate to a multiple of d+1, then repair the
        // sum (it must be 0) by moving the coordinates that were rounded the "wrong" way most.
        let mut origin = [0i32; MAX_DIM + 1];
        let mut y = [0f32; MAX_DIM + 1];
        let mut sum = 0i32;
        for k in 0..=d {
            // Round half away from zero with a cast: no libm call on the hot path.
            let q = x[k] / d1;
            let r = (q + 0.5f32.copysign(q)) as i32;
            origin[k] = r * (d as i32 + 1);
            y[k] = x[k] - r as f32 * d1;
            sum += r;
        }
        let mut rank = [0usize; MAX_DIM + 1];
        for i in 0..=d {
            for j in (i + 1)..=d {
                if y[i] < y[j] {
                    rank[i] += 1;
                } else {
                    rank[j] += 1;
                }
            }
        }
        let d1i = d as i32 + 1;
        if sum > 0 {
            for k in 0..=d {
                if rank[k] as i32 >= d1i - sum {
                    origin[k] -= d1i;
                    y[k] += d1;
                    rank[k] = (rank[k] as i32 + sum - d1i) as usize;
                } else {
                    rank[k] = (rank[k] as i32 + sum) as usize;
                }
            }
        } else if sum < 0 {
            for k in 0..=d {
                if (rank[k] as i32) < -sum {
                    origin[k] += d1i;
                    y[k] -= d1;
                    rank[k] = (rank[k] as i32 + d1i + sum) as usize;
                } else {
                    rank[k] = (rank[k] as i32 + sum) as usize;
                }
            }
        }
        // Barycentric weights from the sorted offsets: corner k's weight is the gap between the
        // offsets ranked d-k and d-k+1, divided by d+1; corner 0 takes the rest.
        let mut bary = [0f32; MAX_DIM + 2];
        for k in 0..=d {
            let v = y[k] / d1;
            bary[d - rank[k]] += v;
            bary[d + 1 - rank[k]] -= v;
        }
        bary[0] += 1.0 + bary[d + 1];
        Simplex { origin, rank, bary }
    }

    /// Key (first d coordinates) of corner `k`: origin + k, except coordinates ranked in the
    /// last k places, which get k - (d+1).
    #[inline(always)]
    fn corner_key(&self, d: usize, k: usize, key: &mut [i32]) {
        for (i, out) in key.iter_mut().enumerate().take(d) {
            let shift = if self.rank[i] + k <= d {
                k as i32
            } else {
                k as i32 - (d as i32 + 1)
            };
            *out = self.origin[i] + shift;
        }
    }
}

impl Lattice {
    /// Build the lattice for `features`: `n` points of `d` coordinates each, point-major, every
    /// coordinate already divided by its kernel standard deviation (the kernel is then
    /// `exp(-|f_i - f_j|² / 2)`).
    ///
    /// `max_bytes` bounds the lattice's own memory (per-point tables, hash table, per-vertex
    /// tables); a volume that would need more is refused with [`Error::TooLarge`] before or while
    /// building, never by an abort.
    pub fn new(features: &[f32], d: usize, max_bytes: usize) -> Result<Lattice> {
        if d == 0 || !features.len().is_multiple_of(d) {
            return Err(Error::InvalidInput(format!(
                "{} feature values is not a whole number of {d}-dimensional points",
                features.len()
            )));
        }
        Self::from_fn(features.len() / d, d, max_bytes, |i, f| {
            f.copy_from_slice(&features[i * d..(i + 1) * d]);
        })
    }

    /// Like [`Lattice::new`], with point `i`'s features written by `feature(i, out)` (called once
    /// per point, from any thread and in no set order) so a volume's features never need a buffer of
    /// their own.
    pub fn from_fn(
        n: usize,
        d: usize,
        max_bytes: usize,
        feature: impl Fn(usize, &mut [f32]) + Sync,
    ) -> Result<Lattice> {
        if d == 0 || d > MAX_DIM {
            return Err(Error::InvalidInput(format!(
                "feature dimension {d}: the lattice supports 1 to {MAX_DIM}"
            )));
        }
        let budget = Budget::new(n, d, max_bytes)?;
        let mut table = KeyTable::new(d, budget)?;
        let (corners, weights) = splat_tables(n, d, feature, &mut table)?;
        let m = table.len();
        let neighbours = neighbour_table(&table, d)?;
        drop(table);
        let mut lattice = Lattice {
            d,
            n,
            m,
            corners,
            weights,
            neighbours,
            inv_norm: Vec::new(),
        };
        let ones = try_filled(n, 1f32, "the CRF normaliser")?;
        let mut norm = try_filled(n, 0f32, "the CRF normaliser")?;
        lattice.filter(&ones, &mut norm)?;
        drop(ones);
        for v in norm.iter_mut() {
            // Each point keeps at least its own splat through the blur, so this is > 0.
            *v = if *v > 0.0 { 1.0 / *v } else { 0.0 };
        }
        lattice.inv_norm = norm;
        Ok(lattice)
    }

    /// Number of feature points.
    pub fn len(&self) -> usize {
        self.n
    }

    /// `true` when built over no points.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Number of lattice vertices the data touched (a measure of cost and memory).
    pub fn vertices(&self) -> usize {
        self.m
    }

    /// Feature dimension.
    pub fn dim(&self) -> usize {
        self.d
    }

    /// Bytes held by this lattice between filter calls.
    pub fn bytes(&self) -> usize {
        self.corners.len() * 4
            + self.weights.len() * 4
            + self.neighbours.len() * 4
            + self.inv_norm.len() * 4
    }

    /// Approximate `out_i = Σ_j k(f_i, f_j) values_j` (unnormalised; the lattice's overall gain
    /// is not 1, so only ratios of such sums are meaningful).
    pub fn filter(&self, values: &[f32], out: &mut [f32]) -> Result<()> {
        self.check_len(values.len(), out.len())?;
        let d1 = self.d + 1;
        let mut lat = self.splat(values)?;
        let mut tmp = try_filled(self.m + 1, 0f32, "the CRF lattice values")?;
        // Blur along each lattice direction; vertex m is the permanent zero. Every vertex reads
        // only the previous pass, so the vertices split freely across threads.
        for dir in 0..d1 {
            let (src, nbs) = (&lat, &self.neighbours);
            for_each_chunk(&mut tmp[..self.m], CHUNK, |start, chunk| {
                for (j, t) in chunk.iter_mut().enumerate() {
                    let v = start + j;
                    let nb = &nbs[(v * d1 + dir) * 2..(v * d1 + dir) * 2 + 2];
                    *t = 0.5 * src[v] + 0.25 * (src[nb[0] as usize] + src[nb[1] as usize]);
                }
            });
            std::mem::swap(&mut lat, &mut tmp);
        }
        // Slice: every point gathers on its own.
        let (corners, weights, lat) = (&self.corners, &self.weights, &lat);
        for_each_chunk(out, CHUNK, |start, chunk| {
            for (j, o) in chunk.iter_mut().enumerate() {
                let i = start + j;
                let c = &corners[i * d1..(i + 1) * d1];
                let w = &weights[i * d1..(i + 1) * d1];
                *o = c
                    .iter()
                    .zip(w)
                    .map(|(&ci, &wi)| wi * lat[ci as usize])
                    .sum();
            }
        });
        Ok(())
    }

    /// Splat `values` onto the lattice vertices (`m + 1` values, the last the zero vertex).
    /// Points scatter into shared vertices, so contiguous runs of points are splatted into
    /// buffers of their own (side by side natively) and the buffers summed in order: one extra
    /// vertex array per part (a few MB) instead of atomics. The number of parts is fixed by the
    /// data ([`SPLAT_PARTS`]), never by the thread count, so the sums are the same bits on any
    /// number of cores (the page's one worker included; its `exp` and `ln` are another
    /// library's, so page and native agree to rounding, not to the bit).
    fn splat(&self, values: &[f32]) -> Result<Vec<f32>> {
        let d1 = self.d + 1;
        let parts = SPLAT_PARTS.min(self.n / (1 << 15)).max(1);
        let per = self.n.div_ceil(parts).max(1);
        let splat_range = |lat: &mut [f32], range: std::ops::Range<usize>| {
            let c = &self.corners[range.start * d1..range.end * d1];
            let w = &self.weights[range.start * d1..range.end * d1];
            for ((c, w), &v) in c
                .chunks_exact(d1)
                .zip(w.chunks_exact(d1))
                .zip(&values[range])
            {
                for (&ci, &wi) in c.iter().zip(w) {
                    lat[ci as usize] += wi * v;
                }
            }
        };
        let mut bufs = Vec::with_capacity(parts);
        for _ in 0..parts {
            bufs.push(try_filled(self.m + 1, 0f32, "the CRF lattice values")?);
        }
        for_each_item(&mut bufs, |p, lat| {
            splat_range(lat, (p * per).min(self.n)..((p + 1) * per).min(self.n));
        });
        let mut lat = bufs.swap_remove(0);
        if !bufs.is_empty() {
            let others = &bufs;
            for_each_chunk(&mut lat, CHUNK, |start, chunk| {
                let len = chunk.len();
                for b in others {
                    for (o, &v) in chunk.iter_mut().zip(&b[start..start + len]) {
                        *o += v;
                    }
                }
            });
        }
        Ok(lat)
    }

    fn check_len(&self, values: usize, out: usize) -> Result<()> {
        if values != self.n || out != self.n {
            return Err(Error::InvalidInput(format!(
                "lattice built for {} points was given {values} values and {out} outputs",
                self.n
            )));
        }
        Ok(())
    }
}

impl super::Filter for Lattice {
    fn len(&self) -> usize {
        Lattice::len(self)
    }

    fn filter_sum(&self, values: &[f32], out: &mut [f32]) -> Result<()> {
        self.filter(values, out)
    }

    fn inverse_norm(&self) -> &[f32] {
        &self.inv_norm
    }
}

/// Most runs of points a splat sums separately (see [`Lattice::filter`]'s splat): enough for
/// the cores of a typical machine, and the same number everywhere.
const SPLAT_PARTS: usize = 4;

/// Points per parallel work item when locating points and writing their features.
const POINTS: usize = 2048;

/// Points located per block of [`splat_tables`]: the block's corner keys (≤ 8·9 i32 per point)
/// stay a few MB.
const BLOCK: usize = 1 << 15;

/// Locate every point, insert its d+1 corners, and record corner indices and weights.
///
/// Locating a point (elevation, rounding, ranking, corner keys) needs nothing shared, so it runs
/// block by block in parallel (natively). Hashing the corners was then most of the build
/// (70 of 125 ms for the 0.85 M points of a 512×512×32 scan's CRF): each thread finds the
/// distinct corners of its part of a block, and only those go into the shared table, part by
/// part in point order, which keeps vertex numbering, and so the result, identical to a
/// sequential build.
fn splat_tables(
    n: usize,
    d: usize,
    feature: impl Fn(usize, &mut [f32]) + Sync,
    table: &mut KeyTable,
) -> Result<(Vec<u32>, Vec<f32>)> {
    let d1 = d + 1;
    let mut corners = try_vec::<u32>(n * d1, "the CRF lattice corner indices")?;
    let mut weights = try_filled::<f32>(n * d1, 0.0, "the CRF lattice weights")?;
    // The lattice is scaled so that the blur's variance, plus the splat/slice interpolation's,
    // matches a unit Gaussian in feature space (Adams et al.: a factor (d+1)·sqrt(2/3)).
    let c = (d as f32 + 1.0) * (2.0f32 / 3.0).sqrt();
    let scale: Vec<f32> = (0..d)
        .map(|i| c / (((i + 1) * (i + 2)) as f32).sqrt())
        .collect();
    let block = BLOCK.min(n.max(1));
    let mut feats = try_filled(block * d, 0f32, "the CRF lattice features")?;
    let mut keys = try_filled(block * d1 * d, 0i32, "the CRF lattice keys")?;
    let mut start = 0;
    while start < n {
        let len = block.min(n - start);
        // Features written side by side (natively), then checked in point order so that the
        // error names the first bad point.
        for_each_chunk(&mut feats[..len * d], POINTS * d, |at, chunk| {
            for (j, f) in chunk.chunks_exact_mut(d).enumerate() {
                feature(start + at / d + j, f);
            }
        });
        if let Some(bad) = feats[..len * d]
            .iter()
            .position(|v| !(v.is_finite() && v.abs() <= MAX_FEATURE))
        {
            let (i, k) = (start + bad / d, bad % d);
            return Err(Error::InvalidInput(format!(
                "feature {k} of point {i} is {} kernel widths: lattice features must be \
                 finite and within ±{MAX_FEATURE} (is a kernel width or voxel size absurd?)",
                feats[bad]
            )));
        }
        // Rows of d1·d keys and d1 weights per point; chunks of whole points.
        let (feats_b, scale) = (&feats[..len * d], &scale[..]);
        let w_block = &mut weights[start * d1..(start + len) * d1];
        locate_block(feats_b, d, scale, &mut keys[..len * d1 * d], w_block);
        // Each part of the block (one per thread natively, the whole block on wasm) numbers
        // its distinct corners in order of first appearance; adding those lists to the table
        // part by part then numbers every vertex at its first appearance in point order, as a
        // sequential build would.
        let (block_keys, budget, row) = (&keys[..len * d1 * d], table.budget, d1 * d);
        let parts = map_ranges(len, threads(), |r| {
            first_appearances(&block_keys[r.start * row..r.end * row], d, budget)
        });
        for part in parts {
            let (distinct, local) = part?;
            let mut global = try_vec::<u32>(distinct.len() / d, "the CRF lattice vertices")?;
            for key in distinct.chunks_exact(d) {
                global.push(table.insert(key)?);
            }
            corners.extend(local.iter().map(|&l| global[l as usize]));
        }
        start += len;
    }
    Ok((corners, weights))
}

/// The distinct corner keys of `keys` (`d+1` keys of `d` coordinates per point) in order of
/// first appearance, and every corner's index in that list.
///
/// Neighbouring voxels share most corners, and a corner's index k is its remainder class, so a
/// shared corner has the same k in both: the last key and index per k are remembered and only
/// corners that changed are hashed.
fn first_appearances(keys: &[i32], d: usize, budget: Budget) -> Result<(Vec<i32>, Vec<u32>)> {
    let d1 = d + 1;
    let mut table = KeyTable::new(d, budget)?;
    let mut local = try_vec::<u32>(keys.len() / d, "the CRF lattice corner indices")?;
    let mut last_keys = [[i32::MIN; MAX_DIM]; MAX_DIM + 1];
    let mut ids = [0u32; MAX_DIM + 1];
    for kp in keys.chunks_exact(d1 * d) {
        for k in 0..d1 {
            let key = &kp[k * d..(k + 1) * d];
            if !same_key(key, &last_keys[k][..d]) {
                ids[k] = table.insert(key)?;
                last_keys[k][..d].copy_from_slice(key);
            }
        }
        local.extend_from_slice(&ids[..d1]);
    }
    Ok((table.keys, local))
}

/// Corner keys (`d+1` keys of `d` coordinates per point) and barycentric weights of a block of
/// points, in parallel natively.
fn locate_block(feats: &[f32], d: usize, scale: &[f32], keys: &mut [i32], weights: &mut [f32]) {
    let d1 = d + 1;
    #[inline(always)]
    fn point(f: &[f32], scale: &[f32], d: usize, kp: &mut [i32], w: &mut [f32]) {
        let s = Simplex::locate(f, scale, d);
        for k in 0..=d {
            s.corner_key(d, k, &mut kp[k * d..(k + 1) * d]);
        }
        w.copy_from_slice(&s.bary[..=d]);
    }
    // Locating is most of a lattice build: the CRF's feature sizes (3, 4) get copies of
    // `point` with `d` a constant, which the compiler unrolls.
    let one = |f: &[f32], kp: &mut [i32], w: &mut [f32]| match d {
        3 => point(f, scale, 3, kp, w),
        4 => point(f, scale, 4, kp, w),
        _ => point(f, scale, d, kp, w),
    };
    #[cfg(not(target_arch = "wasm32"))]
    {
        use rayon::prelude::*;
        keys.par_chunks_mut(POINTS * d1 * d)
            .zip(weights.par_chunks_mut(POINTS * d1))
            .zip(feats.par_chunks(POINTS * d))
            .for_each(|((kc, wc), fc)| {
                for ((kp, w), f) in kc
                    .chunks_exact_mut(d1 * d)
                    .zip(wc.chunks_exact_mut(d1))
                    .zip(fc.chunks_exact(d))
                {
                    one(f, kp, w);
                }
            });
    }
    #[cfg(target_arch = "wasm32")]
    {
        for ((kp, w), f) in keys
            .chunks_exact_mut(d1 * d)
            .zip(weights.chunks_exact_mut(d1))
            .zip(feats.chunks_exact(d))
        {
            one(f, kp, w);
        }
    }
}

/// For every vertex and lattice direction, the indices of its − and + neighbours (or `m`, the
/// zero vertex, where the data never touched the neighbour).
fn neighbour_table(table: &KeyTable, d: usize) -> Result<Vec<u32>> {
    let m = table.len();
    let d1 = d + 1;
    let mut out = try_filled::<u32>(m * d1 * 2, 0, "the CRF lattice neighbour table")?;
    // Read-only lookups: vertices split across threads.
    for_each_chunk(&mut out, CHUNK, |start, chunk| {
        let mut plus = [0i32; MAX_DIM];
        let mut minus = [0i32; MAX_DIM];
        // Chunks hold whole vertices (see `for_each_chunk`'s granularity: a multiple of 2·d1).
        for (vi, row) in chunk.chunks_exact_mut(d1 * 2).enumerate() {
            let v = start / (d1 * 2) + vi;
            for dir in 0..d1 {
                // Direction `dir` moves coordinate dir by d (±) and every other one by 1 (∓); the
                // stored key omits coordinate d, so direction d only moves the others.
                for i in 0..d {
                    let k = table.keys[v * d + i];
                    let step = if i == dir { d as i32 } else { -1 };
                    plus[i] = k + step;
                    minus[i] = k - step;
                }
                row[dir * 2] = table.get(&minus[..d]).unwrap_or(m as u32);
                row[dir * 2 + 1] = table.get(&plus[..d]).unwrap_or(m as u32);
            }
        }
    });
    Ok(out)
}

/// Elements per parallel work item: large enough that scheduling is noise, and a multiple of
/// every row length the lattice splits (2·(d+1) neighbour entries for d ≤ [`MAX_DIM`]; 5040 is
/// their least common multiple), so no row straddles two chunks.
const CHUNK: usize = 5040 * 32;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crf::Filter;

    fn rng(seed: &mut u64) -> f32 {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        (*seed >> 40) as f32 / (1u64 << 24) as f32
    }

    #[test]
    fn barycentric_weights_are_a_partition_of_unity_and_reconstruct_the_point() {
        let mut seed = 0x1234_5678_9abc_def0u64;
        for d in 1..=MAX_DIM {
            let c = (d as f32 + 1.0) * (2.0f32 / 3.0).sqrt();
            let scale: Vec<f32> = (0..d)
                .map(|i| c / (((i + 1) * (i + 2)) as f32).sqrt())
                .collect();
            for _ in 0..500 {
                let f: Vec<f32> = (0..d).map(|_| (rng(&mut seed) - 0.5) * 40.0).collect();
                let s = Simplex::locate(&f, &scale, d);
                let sum: f32 = s.bary[..=d].iter().sum();
                assert!((sum - 1.0).abs() < 1e-4, "d={d} sum={sum}");
                for &b in &s.bary[..=d] {
                    assert!((-1e-4..=1.0 + 1e-4).contains(&b), "d={d} weight {b}");
                }
                // Σ_k b_k · corner_k equals the elevated point (check the first d coordinates).
                let mut recon = [0f32; MAX_DIM];
                let mut key = [0i32; MAX_DIM];
                for k in 0..=d {
                    s.corner_key(d, k, &mut key[..d]);
                    for i in 0..d {
                        recon[i] += s.bary[k] * key[i] as f32;
                    }
                }
                let mut x = [0f32; MAX_DIM + 1];
                let mut suffix = 0f32;
                for k in (0..=d).rev() {
                    if k >= 1 {
                        let sv = f[k - 1] * scale[k - 1];
                        x[k] = suffix - k as f32 * sv;
                        suffix += sv;
                    } else {
                        x[0] = suffix;
                    }
                }
                for i in 0..d {
                    assert!((recon[i] - x[i]).abs() < 1e-2, "d={d} {recon:?} vs {x:?}");
                }
                // Every corner key is a lattice point: all coordinates congruent mod d+1.
                for k in 0..=d {
                    s.corner_key(d, k, &mut key[..d]);
                    let r = key[0].rem_euclid(d as i32 + 1);
                    assert!(key[..d].iter().all(|&v| v.rem_euclid(d as i32 + 1) == r));
                }
            }
        }
    }

    #[test]
    fn a_constant_filters_to_exactly_one_after_normalisation() {
        let mut seed = 42u64;
        let f: Vec<f32> = (0..300 * 3).map(|_| rng(&mut seed) * 5.0).collect();
        let lat = Lattice::new(&f, 3, 1 << 30).unwrap();
        let mut out = vec![0f32; 300];
        lat.filter_normalised(&vec![0.7; 300], &mut out).unwrap();
        assert!(out.iter().all(|&v| (v - 0.7).abs() < 1e-5));
    }

    #[test]
    fn a_memory_limit_too_small_is_an_error_naming_the_numbers() {
        let f = vec![0f32; 1000 * 4];
        let err = Lattice::new(&f, 4, 10_000).unwrap_err().to_string();
        assert!(
            err.contains("1000 voxels") && err.contains("4 feature dimensions"),
            "{err}"
        );
    }

    #[test]
    fn too_many_lattice_points_for_the_budget_is_an_error_not_a_panic() {
        // Points far apart each need their own d+1 vertices; a budget for about 100 vertices.
        let f: Vec<f32> = (0..2000).map(|i| (i * 37) as f32).collect();
        let err = Lattice::new(&f, 2, 1000 * 12 + 100 * 80).unwrap_err();
        assert!(matches!(err, Error::TooLarge(_)), "{err}");
    }

    #[test]
    fn bad_dimensions_and_non_finite_features_are_refused() {
        assert!(Lattice::new(&[0.0; 4], 0, 1 << 20).is_err());
        assert!(Lattice::new(&[0.0; 18], MAX_DIM + 1, 1 << 20).is_err());
        assert!(Lattice::new(&[0.0; 5], 2, 1 << 20).is_err());
        assert!(Lattice::new(&[0.0, f32::NAN], 2, 1 << 20).is_err());
        assert!(Lattice::new(&[0.0, 1e30], 2, 1 << 20).is_err());
        let lat = Lattice::new(&[0.0; 4], 2, 1 << 20).unwrap();
        assert!(lat.filter(&[1.0; 3], &mut [0.0; 2]).is_err());
    }
}
