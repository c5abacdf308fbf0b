//! Statistics for benches measured in interleaved rounds.

/// (p25, median, p75) of `v` (nearest rank on `(len - 1) * q`): the one
/// definition every interleaved-rounds figure of the workspace uses.
///
/// ```
/// assert_eq!(bus_test::quartiles(vec![4.0, 1.0, 3.0, 2.0, 5.0]), (2.0, 3.0, 4.0));
/// ```
///
/// # Panics
/// If `v` is empty.
pub fn quartiles(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    (at(0.25), at(0.5), at(0.75))
}
