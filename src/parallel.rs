//! Work split across cores natively and run in order on wasm, where stable Rust has no threads
//! (the page parallelises across workers instead, one module instance each).
//!
//! Every split here is fixed by the data, never by the thread count, so a result summed from
//! parts is the same number on 1, 2 or 16 cores and in the browser.

/// Threads the work may use: rayon's pool natively, one on wasm.
pub(crate) fn threads() -> usize {
    #[cfg(not(target_arch = "wasm32"))]
    {
        rayon::current_num_threads()
    }
    #[cfg(target_arch = "wasm32")]
    {
        1
    }
}

/// `f(start, chunk)` over consecutive chunks of `out` of `chunk` elements (`start` the index of
/// the chunk's first element).
pub(crate) fn for_each_chunk<T: Send>(
    out: &mut [T],
    chunk: usize,
    f: impl Fn(usize, &mut [T]) + Sync + Send,
) {
    let chunk = chunk.max(1);
    #[cfg(not(target_arch = "wasm32"))]
    {
        use rayon::prelude::*;
        out.par_chunks_mut(chunk)
            .enumerate()
            .for_each(|(i, c)| f(i * chunk, c));
    }
    #[cfg(target_arch = "wasm32")]
    {
        for (i, c) in out.chunks_mut(chunk).enumerate() {
            f(i * chunk, c);
        }
    }
}

/// `f(index, item)` for every item.
pub(crate) fn for_each_item<T: Send>(items: &mut [T], f: impl Fn(usize, &mut T) + Sync + Send) {
    #[cfg(not(target_arch = "wasm32"))]
    {
        use rayon::prelude::*;
        items.par_iter_mut().enumerate().for_each(|(i, t)| f(i, t));
    }
    #[cfg(target_arch = "wasm32")]
    {
        for (i, t) in items.iter_mut().enumerate() {
            f(i, t);
        }
    }
}

/// `(a(), b())`: side by side natively (rayon's `join`), one after the other on wasm.
pub(crate) fn join<A: Send, B: Send>(
    a: impl FnOnce() -> A + Send,
    b: impl FnOnce() -> B + Send,
) -> (A, B) {
    #[cfg(not(target_arch = "wasm32"))]
    {
        rayon::join(a, b)
    }
    #[cfg(target_arch = "wasm32")]
    {
        (a(), b())
    }
}

/// `f(range)` over `0..n` cut into `parts` consecutive ranges (fewer when `n` is small), the
/// results in range order: partial sums that the caller adds up in that fixed order.
pub(crate) fn map_ranges<T: Send>(
    n: usize,
    parts: usize,
    f: impl Fn(std::ops::Range<usize>) -> T + Sync + Send,
) -> Vec<T> {
    let parts = parts.clamp(1, n.max(1));
    let per = n.div_ceil(parts).max(1);
    let range = |p: usize| (p * per).min(n)..((p + 1) * per).min(n);
    #[cfg(not(target_arch = "wasm32"))]
    {
        use rayon::prelude::*;
        (0..parts).into_par_iter().map(|p| f(range(p))).collect()
    }
    #[cfg(target_arch = "wasm32")]
    {
        (0..parts).map(|p| f(range(p))).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_cover_every_index_once_in_order() {
        for (n, parts) in [(0, 4), (1, 4), (10, 3), (100, 7), (5, 16)] {
            let got: Vec<usize> = map_ranges(n, parts, |r| r.collect::<Vec<_>>())
                .into_iter()
                .flatten()
                .collect();
            assert_eq!(got, (0..n).collect::<Vec<_>>(), "n {n}, parts {parts}");
        }
    }

    #[test]
    fn chunks_start_where_they_lie() {
        let mut v = vec![0usize; 1000];
        for_each_chunk(&mut v, 64, |start, c| {
            for (j, x) in c.iter_mut().enumerate() {
                *x = start + j;
            }
        });
        assert_eq!(v, (0..1000).collect::<Vec<_>>());
        assert_eq!(join(|| 2 + 2, || "b"), (4, "b"));
        let mut items = vec![0usize; 9];
        for_each_item(&mut items, |i, x| *x = i * i);
        assert_eq!(items[8], 64);
    }
}
