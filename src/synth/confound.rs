//! Look-alikes of blood that the model must learn to ignore (never part of the mask).
//!
//! A naive 50–90 HU threshold finds the haematoma and also these (DESIGN.md, "CT specifics"):
//! - physiological calcifications: choroid plexus in the atria of the lateral ventricles, the
//!   pineal gland at the midline, the basal ganglia (100–400 HU, small);
//! - hyperdense dural venous sinuses (superior sagittal, transverse) and falx (50–75 HU, thin);
//! - beam hardening: dark streaks across the posterior fossa between the petrous bones, and a
//!   bright band of brain along the inner skull (cupping), strongest at the skull base;
//! - partial volume at the inner skull, which the real anatomy already has and thick slices
//!   worsen (done by the slice-profile averaging in [`super::scanner`]).

use super::anatomy::Anatomy;
use super::field::{V3, add, clamp01, norm, smoothstep, sub};
use super::lesion::Lesions;
use super::rng::Rng;

/// A small calcified nodule.
#[derive(Debug, Clone)]
pub struct Calcification {
    /// Centre (mm, anatomy frame).
    pub centre: V3,
    /// Radius (mm).
    pub radius: f64,
    /// Density (HU).
    pub hu: f32,
    /// Where it is ("choroid", "pineal", "basal-ganglia").
    pub site: &'static str,
}

/// A thin hyperdense structure following the dura.
#[derive(Debug, Clone)]
struct Dural {
    hu: f32,
    strength: f64,
    half_width: f64,
}

/// Beam-hardening artefacts.
#[derive(Debug, Clone)]
struct BeamHardening {
    /// Dark streaks: (point, unit direction in the axial plane, depth HU, half-width mm).
    streaks: Vec<(V3, [f64; 2], f64, f64)>,
    /// z range (mm) of the posterior fossa where streaks appear.
    z: (f64, f64),
    /// Brightening at the inner skull (HU at depth 0), its decay length (mm), extra at the base.
    cupping: f64,
    cupping_mm: f64,
    base_boost: f64,
}

/// All confounders of a case.
#[derive(Debug, Clone, Default)]
pub struct Confounders {
    /// Calcifications.
    pub calcifications: Vec<Calcification>,
    falx: Option<Dural>,
    sagittal_sinus: Option<Dural>,
    transverse_sinus: Option<(Dural, f64)>,
    beam: Option<BeamHardening>,
}

impl Confounders {
    /// Draw the confounders of one case, keeping calcifications away from the haematomas.
    pub fn new(rng: &mut Rng, anat: &Anatomy, lesions: &Lesions) -> Confounders {
        let mut calcifications = Vec::new();
        let mut push = |c: Calcification, rng: &mut Rng| {
            let jitter = [
                rng.range(-1.5, 1.5),
                rng.range(-1.5, 1.5),
                rng.range(-1.5, 1.5),
            ];
            let c = Calcification {
                centre: add(c.centre, jitter),
                ..c
            };
            if !lesions.close_to(c.centre, c.radius + 3.0) && anat.brain_at(c.centre) > 0.5 {
                calcifications.push(c);
            }
        };
        if let Some((l, r)) = anat.atria {
            if rng.chance(0.6) {
                let hu = rng.range(120.0, 380.0) as f32;
                let radius = rng.range(1.8, 4.5);
                for a in [l, r] {
                    if rng.chance(0.9) {
                        push(
                            Calcification {
                                centre: a,
                                radius: radius * rng.range(0.8, 1.2),
                                hu,
                                site: "choroid",
                            },
                            rng,
                        );
                    }
                }
            }
            if rng.chance(0.4) {
                let mid = [
                    anat.midline_x((l[2] + r[2]) / 2.0),
                    (l[1] + r[1]) / 2.0 + rng.range(4.0, 10.0),
                    (l[2] + r[2]) / 2.0 - rng.range(2.0, 8.0),
                ];
                push(
                    Calcification {
                        centre: mid,
                        radius: rng.range(1.5, 3.5),
                        hu: rng.range(100.0, 300.0) as f32,
                        site: "pineal",
                    },
                    rng,
                );
            }
        }
        if let Some(vc) = anat.ventricle_centre
            && rng.chance(0.15)
        {
            let hu = rng.range(80.0, 220.0) as f32;
            let lateral = rng.range(18.0, 26.0);
            for s in [-1.0, 1.0] {
                let c = [
                    anat.midline_x(vc[2]) + s * lateral,
                    vc[1] + rng.range(5.0, 15.0),
                    vc[2] - rng.range(0.0, 8.0),
                ];
                push(
                    Calcification {
                        centre: c,
                        radius: rng.range(2.0, 5.0),
                        hu,
                        site: "basal-ganglia",
                    },
                    rng,
                );
            }
        }
        let dural = |rng: &mut Rng, p: f64, w: (f64, f64)| {
            rng.chance(p).then(|| Dural {
                hu: rng.range(58.0, 75.0) as f32,
                strength: rng.range(0.5, 1.0),
                half_width: rng.range(w.0, w.1),
            })
        };
        let falx = dural(rng, 0.5, (0.6, 1.4));
        let sagittal_sinus = dural(rng, 0.5, (2.5, 5.0));
        let transverse_sinus = dural(rng, 0.3, (2.0, 4.0)).map(|d| {
            let (lo, hi) = (anat.brain_box.0[2], anat.brain_box.1[2]);
            (d, lo + rng.range(0.2, 0.3) * (hi - lo))
        });
        let beam = rng.chance(0.7).then(|| {
            let (lo, hi) = (anat.brain_box.0[2], anat.brain_box.1[2]);
            let z = (lo, lo + rng.range(0.18, 0.3) * (hi - lo));
            let streaks = (0..1 + rng.index(3))
                .map(|_| {
                    let angle = rng.range(-0.35, 0.35);
                    let p = [
                        anat.centre[0] + rng.range(-10.0, 10.0),
                        anat.centre[1] + rng.range(-35.0, -5.0),
                        0.0,
                    ];
                    (
                        p,
                        [angle.cos(), angle.sin()],
                        rng.range(8.0, 25.0),
                        rng.range(2.0, 5.0),
                    )
                })
                .collect();
            BeamHardening {
                streaks,
                z,
                cupping: rng.range(2.0, 10.0),
                cupping_mm: rng.range(1.5, 4.0),
                base_boost: rng.range(0.0, 12.0),
            }
        });
        Confounders {
            calcifications,
            falx,
            sagittal_sinus,
            transverse_sinus,
            beam,
        }
    }

    /// Names of the confounders present ("choroid,falx,beam"), or "none".
    pub fn names(&self) -> String {
        let mut v: Vec<&str> = Vec::new();
        for c in &self.calcifications {
            if !v.contains(&c.site) {
                v.push(c.site);
            }
        }
        if self.falx.is_some() {
            v.push("falx");
        }
        if self.sagittal_sinus.is_some() {
            v.push("sss");
        }
        if self.transverse_sinus.is_some() {
            v.push("transverse-sinus");
        }
        if self.beam.is_some() {
            v.push("beam-hardening");
        }
        if v.is_empty() {
            "none".into()
        } else {
            v.join(",")
        }
    }

    /// Apply every confounder to the tissue density `hu` at anatomy point `q`; `pixel` is the
    /// in-plane voxel size (edge width). Also returns how much of the point is solid structure
    /// (calcification, falx; 0..1): blood cannot be there, so the caller scales the blood fraction
    /// by `1 − solid`, which keeps those structures out of the mask even inside a bleed.
    pub fn apply(&self, hu: f32, q: V3, anat: &Anatomy, pixel: f64) -> (f32, f64) {
        let mut hu = f64::from(hu);
        let brain = anat.brain_at(q);
        if brain <= 0.0 {
            return (hu as f32, 0.0);
        }
        let mut solid = 0.0f64;
        let brain = f64::from(brain);
        let depth = f64::from(anat.depth_at(q));
        for c in &self.calcifications {
            let d = norm(sub(q, c.centre));
            if d < c.radius + pixel {
                let w = clamp01(0.5 - (d - c.radius) / pixel.max(0.5));
                hu += (f64::from(c.hu) - hu) * w;
                solid = solid.max(w);
            }
        }
        let lateral = (q[0] - anat.midline_x(q[2])).abs();
        if let Some(f) = &self.falx {
            // Above the ventricles only (below them the midline is the third ventricle).
            let top = anat.ventricle_top.unwrap_or(anat.centre[2]);
            if lateral < f.half_width + pixel && q[2] > top - 5.0 && depth > 0.5 {
                let w = clamp01(0.5 - (lateral - f.half_width) / pixel)
                    * f.strength
                    * smoothstep(top - 5.0, top + 5.0, q[2]);
                hu += (f64::from(f.hu) - hu) * w * brain;
                solid = solid.max(w * brain);
            }
        }
        if let Some(s) = &self.sagittal_sinus {
            let posterior_or_top = q[1] < anat.centre[1] || q[2] > anat.centre[2] + 20.0;
            if lateral < s.half_width + pixel
                && depth < 6.0
                && posterior_or_top
                && q[2] > anat.centre[2] - 15.0
            {
                // Triangular in cross-section: wide at the skull, narrow deeper.
                let half = s.half_width * (1.0 - depth / 6.0);
                let w = clamp01(0.5 - (lateral - half) / pixel) * s.strength;
                hu += (f64::from(s.hu) - hu) * w * brain;
            }
        }
        if let Some((s, z)) = &self.transverse_sinus
            && q[1] < anat.centre[1] - 25.0
            && depth < 5.0
        {
            let dz = (q[2] - z).abs();
            let w = clamp01(0.5 - (dz - s.half_width) / pixel)
                * s.strength
                * clamp01(1.0 - depth / 5.0);
            hu += (f64::from(s.hu) - hu) * w * brain;
        }
        if let Some(b) = &self.beam {
            let base = smoothstep(b.z.1 + 10.0, b.z.0, q[2]);
            hu += (b.cupping + b.base_boost * base) * (-depth / b.cupping_mm).exp() * brain;
            if q[2] > b.z.0 - 5.0 && q[2] < b.z.1 + 5.0 {
                let zw =
                    smoothstep(b.z.0 - 5.0, b.z.0, q[2]) * smoothstep(b.z.1 + 5.0, b.z.1, q[2]);
                for (p, dir, amp, w) in &b.streaks {
                    let (dx, dy) = (q[0] - p[0], q[1] - p[1]);
                    let dist = (dx * dir[1] - dy * dir[0]).abs();
                    if dist < 4.0 * w {
                        hu -= amp * (-(dist / w).powi(2)).exp() * zw * brain;
                    }
                }
            }
        }
        (hu as f32, solid)
    }
}
