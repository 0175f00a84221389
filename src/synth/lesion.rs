//! Simulated haemorrhages, drawn as continuous fields in the anatomy's millimetre frame.
//!
//! Each lesion answers, at a point, "what fraction of this point is blood, and how dense is that
//! blood". The scanner simulation averages those answers over each voxel's slice profile, so the
//! mask (blood fraction ≥ ½ of the final voxel) is exactly what the image shows, at any slice
//! thickness. In-plane partial volume comes from a soft edge one pixel wide around each surface.
//!
//! Densities follow blood on non-contrast CT: acute clots 55–85 HU, while a clot that is still
//! liquid, a few days old or in an anaemic patient reads 38–55 HU, barely above grey matter
//! (~35–40 HU; white matter ~25–30 HU), and blood mixed with CSF (subarachnoid) 45–75 HU. A clot
//! may settle into a fluid level (cells below, serum above, the patient lying supine).
//! Perihaematomal oedema is hypodense (~15–30 HU).
//!
//! Where readers see blood that a model trained on round deep clots misses, the generator draws
//! it on purpose: small cortical clots that touch the inner table, clots in the temporal lobes and
//! the posterior fossa next to the skull base, low-density clots, subarachnoid blood filling the
//! sulci and cisterns, and intraventricular layering.

use super::anatomy::Anatomy;
use super::field::{
    M3, V3, Waves, add, clamp01, dot, mul, norm, random_rotation, scale, smoothstep, sub,
};
use super::rng::Rng;

/// Lowest and highest blood density drawn (HU).
pub const BLOOD_HU: (f32, f32) = (35.0, 95.0);

/// The kinds of haemorrhage simulated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LesionKind {
    /// Intraparenchymal (intracerebral) haematoma.
    Iph,
    /// Intraventricular blood.
    Ivh,
    /// Acute subdural haematoma: a crescent along the convexity.
    Sdh,
    /// Epidural haematoma: a biconvex lens against the skull.
    Edh,
    /// Subarachnoid blood: the CSF of the sulci, fissures or basal cisterns replaced by blood.
    Sah,
}

impl LesionKind {
    /// Short name for `cases.tsv`.
    pub fn name(self) -> &'static str {
        match self {
            LesionKind::Iph => "iph",
            LesionKind::Ivh => "ivh",
            LesionKind::Sdh => "sdh",
            LesionKind::Edh => "edh",
            LesionKind::Sah => "sah",
        }
    }
}

/// One ellipsoidal lobe: `|m (p − c)| = 1` on its surface.
#[derive(Debug, Clone)]
struct Lobe {
    c: V3,
    m: M3,
    /// Shortest semi-axis (mm): turns the ellipsoid's level value into an approximate distance.
    r_min: f64,
}

/// Heterogeneous blood density: a base value, smooth variation and lower-density pockets.
#[derive(Debug, Clone)]
struct Density {
    base: f64,
    swing: f64,
    waves: Waves,
    pockets: Waves,
    pocket_drop: f64,
    /// A fluid level: below `y` (mm; posterior, dependent when supine) the blood is `extra` HU
    /// denser than above it.
    level: Option<(f64, f64)>,
}

impl Density {
    fn new(rng: &mut Rng, base: (f64, f64), size_mm: f64) -> Density {
        Density {
            base: rng.range(base.0, base.1),
            swing: rng.range(3.0, 9.0),
            waves: Waves::new(rng, 6, (0.4 * size_mm).max(4.0), (1.5 * size_mm).max(8.0)),
            pockets: Waves::new(rng, 5, (0.5 * size_mm).max(5.0), (1.2 * size_mm).max(9.0)),
            pocket_drop: if rng.chance(0.5) {
                rng.range(8.0, 22.0)
            } else {
                0.0
            },
            level: None,
        }
    }

    fn at(&self, p: V3) -> f32 {
        let mut hu = self.base + self.swing * self.waves.at(p);
        if self.pocket_drop > 0.0 {
            hu -= self.pocket_drop * smoothstep(0.4, 0.9, self.pockets.at(p));
        }
        if let Some((y, extra)) = self.level {
            hu += extra * clamp01(y - p[1] + 0.5);
        }
        (hu as f32).clamp(BLOOD_HU.0, BLOOD_HU.1)
    }
}

/// A lobulated intraparenchymal haematoma with its oedema rim and mass effect.
#[derive(Debug, Clone)]
pub struct Iph {
    /// Centre (mm, anatomy frame).
    pub centre: V3,
    /// Radius (mm) of the sphere with the target volume.
    pub radius: f64,
    lobes: Vec<Lobe>,
    surface: Waves,
    surface_amp: f64,
    density: Density,
    rim_mm: f64,
    rim_strength: f64,
    rim_waves: Waves,
    /// Oedema density (HU).
    pub oedema_hu: f32,
    /// Strength of the tissue displacement (0: none).
    mass: f64,
    mass_reach: f64,
    reach: f64,
    /// Depths (mm below the inner table) over which the blood fades in: (1, 3) keeps a deep
    /// clot off the skull; a cortical clot runs up to the table.
    edge: (f64, f64),
    /// Its name in `cases.tsv` and the per-kind evaluation.
    pub label: &'static str,
}

/// What sets an intraparenchymal haematoma apart from the acute deep clot ([`IphStyle::ACUTE`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IphStyle {
    /// Name in `cases.tsv` ("iph", "iph-cortical", "iph-low").
    pub label: &'static str,
    /// Range of the clot's base density (HU).
    pub density: (f64, f64),
    /// Whether the clot may reach the inner table (cortical and skull-base clots).
    pub cortical: bool,
    /// Chance of a fluid level (cells settled below serum).
    pub level_chance: f64,
}

impl IphStyle {
    /// The acute deep or lobar clot.
    pub const ACUTE: IphStyle = IphStyle {
        label: "iph",
        density: (58.0, 80.0),
        cortical: false,
        level_chance: 0.0,
    };
    /// A liquid, subacute or anaemic clot, barely denser than grey matter, often with a level.
    pub const LOW: IphStyle = IphStyle {
        label: "iph-low",
        density: (38.0, 55.0),
        cortical: false,
        level_chance: 0.4,
    };
    /// A small clot (contusion, amyloid or cortical bleed) that touches the inner table.
    pub const CORTICAL: IphStyle = IphStyle {
        label: "iph-cortical",
        density: (50.0, 82.0),
        cortical: true,
        level_chance: 0.0,
    };
}

impl Iph {
    /// A haematoma of about `volume_ml` centred at `centre`, drawn in `style`. The acute style
    /// draws exactly what the acute-only generator drew, so the demo sample and the test fixture
    /// stay the same cases.
    pub fn styled(rng: &mut Rng, centre: V3, volume_ml: f64, style: IphStyle) -> Iph {
        let radius = (3.0 * volume_ml * 1000.0 / (4.0 * std::f64::consts::PI)).cbrt();
        let mut lobes = vec![ellipsoid(rng, centre, radius, 0.65)];
        let extra = rng.index(4);
        for _ in 0..extra {
            let dir = rng.direction();
            let off = rng.range(0.35, 0.75) * radius;
            let c = add(centre, scale(dir, off));
            let r = radius * rng.range(0.3, 0.65);
            lobes.push(ellipsoid(rng, c, r, 0.6));
        }
        // Shrink so that the union keeps roughly the target volume.
        let shrink = (1.0 + 0.12 * extra as f64).cbrt();
        for l in &mut lobes {
            l.c = add(centre, scale(sub(l.c, centre), 1.0 / shrink));
            l.m = l.m.map(|row| row.map(|v| v * shrink));
            l.r_min /= shrink;
        }
        let surface = Waves::new(rng, 8, 0.7 * radius.max(3.0), 2.5 * radius.max(3.0));
        let surface_amp = rng.range(0.08, 0.2) * radius;
        let mut density = Density::new(rng, style.density, radius);
        if style.level_chance > 0.0 && rng.chance(style.level_chance) {
            let y = centre[1] + rng.range(-0.4, 0.3) * radius;
            density.level = Some((y, rng.range(10.0, 25.0)));
        }
        let rim_mm = rng.range(1.5, 3.0 + 0.2 * radius);
        let mass = if rng.chance(0.7) {
            rng.range(0.05, 0.3) * (radius / 20.0).min(1.0)
        } else {
            0.0
        };
        let reach = 1.9 * radius + rim_mm + surface_amp + 4.0;
        Iph {
            centre,
            radius,
            lobes,
            surface,
            surface_amp,
            density,
            rim_mm,
            rim_strength: rng.range(0.4, 0.9),
            rim_waves: Waves::new(rng, 5, 6.0, 20.0),
            oedema_hu: rng.range(14.0, 24.0) as f32,
            mass,
            mass_reach: 1.8 * radius,
            reach,
            edge: if style.cortical {
                (0.0, 0.7)
            } else {
                (1.0, 3.0)
            },
            label: style.label,
        }
    }

    /// The same haematoma grown (or shrunk) about its centre by `factor` in every direction:
    /// the shape, density pattern and rim stay, the volume scales by `factor³` (follow-up pairs
    /// with a known growth).
    pub fn grown(&self, factor: f64) -> Iph {
        let f = factor.max(1e-3);
        let mut g = self.clone();
        g.radius *= f;
        for l in &mut g.lobes {
            l.c = add(self.centre, scale(sub(l.c, self.centre), f));
            l.m = l.m.map(|row| row.map(|v| v / f));
            l.r_min *= f;
        }
        g.surface_amp *= f;
        g.mass_reach *= f;
        g.reach *= f;
        g
    }

    /// Approximate signed distance (mm) to the haematoma's surface (negative inside).
    fn sdf(&self, p: V3) -> f64 {
        let d = self
            .lobes
            .iter()
            .map(|l| (norm(mul(&l.m, sub(p, l.c))) - 1.0) * l.r_min)
            .fold(f64::INFINITY, f64::min);
        d - self.surface_amp * self.surface.at(p)
    }

    fn near(&self, p: V3) -> bool {
        let d = sub(p, self.centre);
        dot(d, d) < self.reach * self.reach
    }

    /// The anatomy point shown at `p` once the haematoma has pushed tissue outwards: tissue is
    /// pulled from closer to the centre (monotone in the distance, so nothing folds).
    pub fn displace(&self, p: V3) -> V3 {
        if self.mass <= 0.0 {
            return p;
        }
        let d = sub(p, self.centre);
        let r2 = dot(d, d) / (self.mass_reach * self.mass_reach);
        if r2 > 9.0 {
            return p;
        }
        add(self.centre, scale(d, 1.0 - self.mass * (-r2).exp()))
    }

    /// Blood fraction and density at `p`; `pixel` is the in-plane voxel size (the edge width).
    fn blood(&self, p: V3, anat: &Anatomy, pixel: f64) -> (f64, f32) {
        if !self.near(p) {
            return (0.0, 0.0);
        }
        let f = clamp01(0.5 - self.sdf(p) / pixel);
        if f <= 0.0 {
            return (0.0, 0.0);
        }
        // Stays in the brain: a deep clot fades out within 1–3 mm of the inner skull, a cortical
        // one only at the brain's edge.
        let inside = smoothstep(self.edge.0, self.edge.1, f64::from(anat.depth_at(p)));
        (f * inside, self.density.at(p))
    }

    /// Oedema weight (0..1) at `p`: strongest at the clot's edge, gone `rim_mm` outside it.
    fn oedema(&self, p: V3) -> f64 {
        if !self.near(p) {
            return 0.0;
        }
        let d = self.sdf(p);
        if d <= -1.0 || d >= self.rim_mm {
            return 0.0;
        }
        let irregular = 0.75 + 0.25 * self.rim_waves.at(p);
        self.rim_strength * clamp01(1.0 - d / self.rim_mm) * irregular.clamp(0.0, 1.0)
    }
}

fn ellipsoid(rng: &mut Rng, c: V3, r: f64, min_ratio: f64) -> Lobe {
    let a = r * rng.range(1.0, 1.0 / min_ratio);
    let b = r * rng.range(min_ratio, 1.0);
    let cc = r * r * r / (a * b);
    let rot = random_rotation(rng);
    let inv = [1.0 / a, 1.0 / b, 1.0 / cc];
    let mut m = [[0.0; 3]; 3];
    for (row, (axis, s)) in m.iter_mut().zip(rot.iter().zip(inv)) {
        *row = axis.map(|v| v * s);
    }
    Lobe {
        c,
        m,
        r_min: a.min(b).min(cc),
    }
}

/// How intraventricular blood is distributed.
#[derive(Debug, Clone)]
enum IvhShape {
    /// Layering in the dependent (posterior, the patient lies supine) horns below `y` mm.
    Layer { y: f64 },
    /// A cast filling the ventricle around a point.
    Cast { c: V3, r: f64 },
}

/// Intraventricular blood: the ventricles' CSF replaced by blood in part of them.
#[derive(Debug, Clone)]
pub struct Ivh {
    shape: IvhShape,
    density: Density,
    lo: V3,
    hi: V3,
}

impl Ivh {
    /// Blood in the ventricles of `anat`, or `None` when it has none.
    pub fn new(rng: &mut Rng, anat: &Anatomy) -> Option<Ivh> {
        let pts = &anat.ventricle_points;
        if pts.len() < 20 {
            return None;
        }
        let mut lo = [f64::INFINITY; 3];
        let mut hi = [f64::NEG_INFINITY; 3];
        for p in pts {
            for a in 0..3 {
                lo[a] = lo[a].min(p[a] - 3.0);
                hi[a] = hi[a].max(p[a] + 3.0);
            }
        }
        let shape = if rng.chance(0.5) {
            IvhShape::Layer {
                y: lo[1] + (hi[1] - lo[1]) * rng.range(0.15, 0.45),
            }
        } else {
            IvhShape::Cast {
                c: pts[rng.index(pts.len())],
                r: rng.range(7.0, 18.0),
            }
        };
        Some(Ivh {
            shape,
            density: Density::new(rng, (55.0, 78.0), 15.0),
            lo,
            hi,
        })
    }

    fn blood(&self, p: V3, anat: &Anatomy, pixel: f64) -> (f64, f32) {
        if (0..3).any(|a| p[a] < self.lo[a] || p[a] > self.hi[a]) {
            return (0.0, 0.0);
        }
        let sel = match &self.shape {
            IvhShape::Layer { y } => clamp01((y - p[1]) / pixel + 0.5),
            IvhShape::Cast { c, r } => clamp01(0.5 - (norm(sub(p, *c)) - r) / pixel),
        };
        if sel <= 0.0 {
            return (0.0, 0.0);
        }
        let v = f64::from(anat.ventricle_at(p));
        (sel * v, self.density.at(p))
    }
}

/// An extra-axial collection (subdural crescent or epidural lens) against the inner skull.
#[derive(Debug, Clone)]
pub struct ExtraAxial {
    /// Subdural or epidural.
    pub kind: LesionKind,
    centre: V3,
    dir: V3,
    cos_max: f64,
    thickness: f64,
    /// +1: right of the midline, −1: left (neither crosses the falx).
    side: f64,
    density: Density,
}

impl ExtraAxial {
    /// A subdural (`LesionKind::Sdh`) or epidural (`LesionKind::Edh`) collection.
    pub fn new(rng: &mut Rng, anat: &Anatomy, kind: LesionKind) -> ExtraAxial {
        let side = rng.sign();
        let d = [
            side * rng.range(0.5, 1.0),
            rng.range(-0.8, 0.8),
            rng.range(-0.1, 0.7),
        ];
        let dir = scale(d, 1.0 / norm(d));
        let (deg, thickness, dens) = if kind == LesionKind::Edh {
            (rng.range(16.0, 32.0), rng.range(7.0, 22.0), (60.0, 82.0))
        } else {
            (rng.range(30.0, 65.0), rng.range(3.0, 14.0), (52.0, 78.0))
        };
        ExtraAxial {
            kind,
            centre: anat.centre,
            dir,
            cos_max: deg.to_radians().cos(),
            thickness,
            side,
            density: Density::new(rng, dens, 25.0),
        }
    }

    fn blood(&self, p: V3, anat: &Anatomy, pixel: f64) -> (f64, f32) {
        let d = sub(p, self.centre);
        let len = norm(d);
        if len < 1e-6 {
            return (0.0, 0.0);
        }
        let cos = dot(d, self.dir) / len;
        if cos <= self.cos_max {
            return (0.0, 0.0);
        }
        // Neither collection crosses the falx: nothing within 3 mm of the midline.
        let side = clamp01(((p[0] - anat.midline_x(p[2])) * self.side - 3.0) / 1.5 + 0.5);
        if side <= 0.0 {
            return (0.0, 0.0);
        }
        // t runs from 0 at the collection's centre to 1 at its edge (≈ (angle / max angle)²).
        let t = ((1.0 - cos) / (1.0 - self.cos_max)).clamp(0.0, 1.0);
        let profile = if self.kind == LesionKind::Edh {
            (1.0 - t).sqrt()
        } else {
            1.0 - t * t
        };
        let h = self.thickness * profile;
        let depth = f64::from(anat.depth_at(p));
        let brain = f64::from(anat.brain_at(p));
        let f = clamp01((h - depth) / pixel + 0.5) * brain * side;
        (f, self.density.at(p))
    }
}

/// Subarachnoid blood: inside a region around the convexity's sulci, a Sylvian fissure or the
/// basal cisterns, the anatomy's subarachnoid CSF spaces ([`Anatomy::sah_space_at`]) are filled
/// with blood, so it follows the sulci and cisterns that are there, up to the inner table.
#[derive(Debug, Clone)]
pub struct Sah {
    centre: V3,
    radius: f64,
    outline: Waves,
    /// Share of a CSF space's volume that is blood (the rest stays CSF).
    fill: f64,
    density: Density,
}

impl Sah {
    /// Subarachnoid blood in `anat`: over the convexity (60 %) or in the basal cisterns and
    /// Sylvian fissures (40 %).
    pub fn new(rng: &mut Rng, anat: &Anatomy) -> Sah {
        let c = anat.centre;
        let (centre, radius) = if rng.chance(0.4) {
            let p = [
                c[0] + rng.range(-35.0, 35.0),
                c[1] + rng.range(-15.0, 25.0),
                c[2] - rng.range(15.0, 40.0),
            ];
            (p, rng.range(20.0, 40.0))
        } else {
            (surface_point(rng, anat), rng.range(15.0, 35.0))
        };
        Sah {
            centre,
            radius,
            outline: Waves::new(rng, 6, 10.0, 40.0),
            fill: rng.range(0.8, 1.0),
            density: Density::new(rng, (45.0, 72.0), 20.0),
        }
    }

    fn blood(&self, q: V3, anat: &Anatomy) -> (f64, f32) {
        let d = norm(sub(q, self.centre));
        if d > 1.4 * self.radius + 6.0 {
            return (0.0, 0.0);
        }
        let region = clamp01((self.radius * (1.0 + 0.3 * self.outline.at(q)) - d) / 6.0);
        if region <= 0.0 {
            return (0.0, 0.0);
        }
        (
            // A voxel half CSF space fills whole: blood widens the space it fills.
            (1.6 * f64::from(anat.sah_space_at(q))).min(1.0) * region * self.fill,
            self.density.at(q),
        )
    }
}

/// A point about 2 mm under the brain's surface, above the skull base, in a random direction
/// from the brain's centre.
fn surface_point(rng: &mut Rng, anat: &Anatomy) -> V3 {
    let r = rng.direction();
    let d = [r[0], r[1], r[2].abs() * 0.8 + 0.1];
    let d = scale(d, 1.0 / norm(d));
    let mut last = anat.centre;
    for step in 0..160 {
        let p = add(anat.centre, scale(d, f64::from(step)));
        if anat.brain_at(p) < 0.5 {
            break;
        }
        last = p;
    }
    sub(last, scale(d, 2.0))
}

/// One simulated haemorrhage.
#[derive(Debug, Clone)]
pub enum Lesion {
    /// Intraparenchymal.
    Iph(Iph),
    /// Intraventricular.
    Ivh(Ivh),
    /// Subdural or epidural.
    Extra(ExtraAxial),
    /// Subarachnoid.
    Sah(Sah),
}

impl Lesion {
    /// Its kind.
    pub fn kind(&self) -> LesionKind {
        match self {
            Lesion::Iph(_) => LesionKind::Iph,
            Lesion::Ivh(_) => LesionKind::Ivh,
            Lesion::Extra(e) => e.kind,
            Lesion::Sah(_) => LesionKind::Sah,
        }
    }

    /// Where a thin-slice slab should be centred to hold it (extra-axial collections are large
    /// enough to be in any slab).
    pub fn centre(&self) -> Option<V3> {
        match self {
            Lesion::Iph(i) => Some(i.centre),
            Lesion::Sah(s) => Some(s.centre),
            Lesion::Ivh(v) => Some(match &v.shape {
                IvhShape::Cast { c, .. } => *c,
                IvhShape::Layer { .. } => scale(add(v.lo, v.hi), 0.5),
            }),
            Lesion::Extra(_) => None,
        }
    }

    /// Its name in `cases.tsv`: the kind, with the style of an intraparenchymal clot.
    pub fn name(&self) -> &'static str {
        match self {
            Lesion::Iph(i) => i.label,
            other => other.kind().name(),
        }
    }
}

/// All lesions of a case, evaluated together.
#[derive(Debug, Clone, Default)]
pub struct Lesions {
    /// The lesions.
    pub list: Vec<Lesion>,
}

impl Lesions {
    /// The anatomy point shown at lesion-frame point `p` (mass effect of every haematoma).
    pub fn displace(&self, p: V3) -> V3 {
        let mut q = p;
        for l in &self.list {
            if let Lesion::Iph(i) = l {
                q = i.displace(q);
            }
        }
        q
    }

    /// Total blood fraction (capped at 1) and its mean density at `p` (lesion frame) and `q`
    /// (the displaced anatomy point that the ventricles and the skull are read at).
    pub fn blood(&self, p: V3, q: V3, anat: &Anatomy, pixel: f64) -> (f64, f32) {
        let (mut f, mut hu) = (0.0, 0.0f64);
        for l in &self.list {
            let (fi, hi) = match l {
                Lesion::Iph(i) => i.blood(p, anat, pixel),
                Lesion::Ivh(v) => v.blood(q, anat, pixel),
                Lesion::Extra(e) => e.blood(q, anat, pixel),
                Lesion::Sah(s) => s.blood(q, anat),
            };
            if fi > 0.0 {
                f += fi;
                hu += fi * f64::from(hi);
            }
        }
        if f <= 0.0 {
            return (0.0, 0.0);
        }
        ((f.min(1.0)), (hu / f) as f32)
    }

    /// Oedema weight (0..1) and density at `p`.
    pub fn oedema(&self, p: V3) -> (f64, f32) {
        let mut best = (0.0, 0.0f32);
        for l in &self.list {
            if let Lesion::Iph(i) = l {
                let w = i.oedema(p);
                if w > best.0 {
                    best = (w, i.oedema_hu);
                }
            }
        }
        best
    }

    /// Whether `p` is within `margin` mm of a haematoma's reach (confounders keep away).
    pub fn close_to(&self, p: V3, margin: f64) -> bool {
        self.list.iter().any(|l| match l {
            Lesion::Iph(i) => norm(sub(p, i.centre)) < i.reach + margin,
            _ => false,
        })
    }

    /// Kinds, comma-separated ("iph,ivh"), or "none".
    pub fn kinds(&self) -> String {
        if self.list.is_empty() {
            return "none".into();
        }
        self.list
            .iter()
            .map(Lesion::name)
            .collect::<Vec<_>>()
            .join(",")
    }
}
