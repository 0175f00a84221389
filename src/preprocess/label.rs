//! Connected components on u8 masks: keep the largest 3-D component, fill holes per slice.
//!
//! Flood fill with an explicit stack (no recursion, no label image): the mask buffer itself is
//! the visited map (values 0 = background, 1 = unvisited foreground, 2.. = visited), so a
//! 512×512×40 volume needs no buffer beyond the stack of pending voxel indices.

use crate::Result;
use crate::error::try_vec;
use crate::parallel::for_each_item;

/// Face neighbours (6-connectivity) of voxel `i` in a C-ordered `(nz, ny, nx)` grid.
fn for_each_face_neighbour(
    i: usize,
    (nz, ny, nx): (usize, usize, usize),
    mut f: impl FnMut(usize),
) {
    let plane = ny * nx;
    let z = i / plane;
    let y = (i / nx) % ny;
    let x = i % nx;
    if x > 0 {
        f(i - 1);
    }
    if x + 1 < nx {
        f(i + 1);
    }
    if y > 0 {
        f(i - nx);
    }
    if y + 1 < ny {
        f(i + nx);
    }
    if z > 0 {
        f(i - plane);
    }
    if z + 1 < nz {
        f(i + plane);
    }
}

/// A stack whose growth is checked, so a huge component is an error, not an abort.
struct Pending(Vec<usize>);

impl Pending {
    fn new() -> Result<Self> {
        Ok(Pending(try_vec(4096, "the flood-fill stack")?))
    }
    fn push(&mut self, i: usize) -> Result<()> {
        if self.0.len() == self.0.capacity() {
            self.0
                .try_reserve(self.0.len().max(4096))
                .map_err(|_| crate::Error::OutOfMemory {
                    what: "the flood-fill stack",
                    bytes: self.0.len() * 2 * std::mem::size_of::<usize>(),
                })?;
        }
        self.0.push(i);
        Ok(())
    }
}

/// Relabel every voxel equal to `from` that is 6-connected to `seed` as `to`; returns the count.
fn flood(
    mask: &mut [u8],
    dims: (usize, usize, usize),
    seed: usize,
    from: u8,
    to: u8,
    stack: &mut Pending,
) -> Result<usize> {
    let mut count = 0;
    mask[seed] = to;
    stack.0.clear();
    stack.push(seed)?;
    while let Some(i) = stack.0.pop() {
        count += 1;
        let mut overflow = Ok(());
        for_each_face_neighbour(i, dims, |j| {
            if mask[j] == from {
                mask[j] = to;
                if let Err(e) = stack.push(j) {
                    overflow = Err(e);
                }
            }
        });
        overflow?;
    }
    Ok(count)
}

/// Keep only the largest 6-connected component of the non-zero voxels (set to 1, rest to 0).
///
/// Ties go to the component met first in memory order; returns its size (0 for an empty mask).
pub(crate) fn keep_largest_component(
    mask: &mut [u8],
    dims: (usize, usize, usize),
) -> Result<usize> {
    for v in mask.iter_mut() {
        *v = u8::from(*v != 0);
    }
    let mut stack = Pending::new()?;
    let mut best: Option<(usize, usize)> = None; // (seed, size)
    for i in 0..mask.len() {
        if mask[i] == 1 {
            let size = flood(mask, dims, i, 1, 2, &mut stack)?;
            if best.is_none_or(|(_, b)| size > b) {
                best = Some((i, size));
            }
        }
    }
    let Some((seed, size)) = best else {
        return Ok(0);
    };
    flood(mask, dims, seed, 2, 3, &mut stack)?;
    for v in mask.iter_mut() {
        *v = u8::from(*v == 3);
    }
    Ok(size)
}

/// Keep the 6-connected components of the non-zero voxels for which `keep(size, largest)` holds
/// (set to 1, the rest to 0); `largest` is the size of the biggest component.
///
/// The one component filter of the crate: the pipeline drops specks below a volume, synth keeps
/// the ventricles' big pieces; both are a rule on (size, largest size).
pub fn filter_components(
    mask: &mut [u8],
    dims: (usize, usize, usize),
    keep: impl Fn(usize, usize) -> bool,
) -> Result<()> {
    for v in mask.iter_mut() {
        *v = u8::from(*v != 0);
    }
    let mut stack = Pending::new()?;
    let mut components = Vec::new(); // (seed, size)
    for i in 0..mask.len() {
        if mask[i] == 1 {
            let size = flood(mask, dims, i, 1, 2, &mut stack)?;
            components.push((i, size));
        }
    }
    let largest = components.iter().map(|&(_, s)| s).max().unwrap_or(0);
    for &(seed, size) in &components {
        if keep(size, largest) {
            flood(mask, dims, seed, 2, 3, &mut stack)?;
        }
    }
    for v in mask.iter_mut() {
        *v = u8::from(*v == 3);
    }
    Ok(())
}

/// Fill the holes of every axial slice: background not 4-connected to the slice border becomes 1.
///
/// Per slice rather than in 3-D because a cavity closed in 3-D is closed in each of its slices,
/// and slices also close cavities that touch the top or bottom of the scan (a cut-off vertex).
pub(crate) fn fill_holes_per_slice(mask: &mut [u8], dims: (usize, usize, usize)) -> Result<()> {
    let (_, ny, nx) = dims;
    let plane = ny * nx;
    if plane == 0 {
        return Ok(());
    }
    // Slices are independent: side by side natively, each with its own flood-fill stack.
    let mut slices: Vec<(&mut [u8], Result<()>)> =
        mask.chunks_exact_mut(plane).map(|s| (s, Ok(()))).collect();
    for_each_item(&mut slices, |_, (slice, result)| {
        *result = fill_holes_in_slice(slice, ny, nx);
    });
    slices.into_iter().try_for_each(|(_, r)| r)
}

/// [`fill_holes_per_slice`] on one `ny × nx` slice.
fn fill_holes_in_slice(slice: &mut [u8], ny: usize, nx: usize) -> Result<()> {
    let mut stack = Pending::new()?;
    for v in slice.iter_mut() {
        *v = u8::from(*v != 0);
    }
    let sdims = (1, ny, nx);
    // Mark (as 2) all background reachable from the border.
    for y in 0..ny {
        for x in 0..nx {
            let on_border = y == 0 || x == 0 || y + 1 == ny || x + 1 == nx;
            let i = y * nx + x;
            if on_border && slice[i] == 0 {
                flood(slice, sdims, i, 0, 2, &mut stack)?;
            }
        }
    }
    for v in slice.iter_mut() {
        *v = u8::from(*v != 2);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_larger_of_two_blobs() {
        // 1×4×6: a 2-voxel blob and a 4-voxel blob.
        #[rustfmt::skip]
        let mut m = vec![
            1, 1, 0, 0, 0, 0,
            0, 0, 0, 1, 1, 0,
            0, 0, 0, 1, 1, 0,
            0, 0, 0, 0, 0, 0,
        ];
        let size = keep_largest_component(&mut m, (1, 4, 6)).unwrap();
        assert_eq!(size, 4);
        assert_eq!(m.iter().filter(|&&v| v == 1).count(), 4);
        assert_eq!(m[0], 0);
        assert_eq!(m[9], 1);
    }

    #[test]
    fn diagonal_contact_is_not_a_connection() {
        let mut m = vec![1, 0, 0, 0, 1, 0, 0, 0, 1]; // 1×3×3 diagonal
        assert_eq!(keep_largest_component(&mut m, (1, 3, 3)).unwrap(), 1);
        assert_eq!(m.iter().filter(|&&v| v == 1).count(), 1);
    }

    #[test]
    fn filter_drops_components_below_the_rule() {
        #[rustfmt::skip]
        let mut m = vec![
            1, 1, 0, 0, 0, 0,
            0, 0, 0, 1, 1, 0,
            0, 0, 0, 1, 1, 0,
            1, 0, 0, 0, 0, 0,
        ];
        filter_components(&mut m, (1, 4, 6), |size, largest| {
            size >= 2 && size * 2 >= largest
        })
        .unwrap();
        assert_eq!(
            m.iter().filter(|&&v| v == 1).count(),
            6,
            "the 2- and 4-voxel blobs stay"
        );
        assert_eq!(m[18], 0, "the single voxel goes");
        filter_components(&mut m, (1, 4, 6), |size, largest| size == largest).unwrap();
        assert_eq!(m.iter().filter(|&&v| v == 1).count(), 4);
    }

    #[test]
    fn empty_mask_stays_empty() {
        let mut m = vec![0u8; 8];
        assert_eq!(keep_largest_component(&mut m, (2, 2, 2)).unwrap(), 0);
        assert!(m.iter().all(|&v| v == 0));
    }

    #[test]
    fn fills_a_ring_but_not_an_open_cup() {
        #[rustfmt::skip]
        let mut m = vec![
            1, 1, 1, 0, 0, 0, 0,
            1, 0, 1, 0, 1, 0, 1,
            1, 1, 1, 0, 1, 1, 1,
        ];
        fill_holes_per_slice(&mut m, (1, 3, 7)).unwrap();
        assert_eq!(m[8], 1, "enclosed pixel filled");
        assert_eq!(m[12], 0, "the cup opens to the border");
    }
}
