//! ICHNet in burn: the network, its input convention and its weights.
//!
//! One model struct for native and browser; the backend is whichever `Device` the caller passes
//! (flex on CPU, wgpu on a GPU). Weights travel as burnpack bytes: loaded from bytes everywhere
//! (the browser fetches them), saved to files natively.

pub mod bilinear;
mod cpu;
pub mod input;
mod kernel;
mod net;
#[cfg(not(target_arch = "wasm32"))]
pub mod train;

pub use net::{Block, ConvBn, IchNet, IchNetConfig, Samples};

use crate::error::{Error, Result};
use burn::module::Module;
use burn::prelude::*;
use burn::store::ModuleRecord;
use burn::tensor::Bytes;

/// The shipped weights, embedded in the native binary so `ichnet segment` works from any folder.
/// Never on wasm: the page fetches `weights/ichnet.bpk` (burn#4487, and a relink per weight
/// change).
#[cfg(not(target_arch = "wasm32"))]
pub const BUNDLED_WEIGHTS: &[u8] = include_bytes!("../../weights/ichnet.bpk");

/// Build the default-configuration network on `device` and load burnpack `bytes` into it, ready
/// for inference: batch norms folded into the convolutions (see [`IchNet::fold_batch_norm`]). A
/// file from another configuration fails with the layer that does not fit.
pub fn load(bytes: Vec<u8>, device: &Device) -> Result<IchNet> {
    Ok(load_unfolded(bytes, device)?.fold_batch_norm())
}

/// As [`load`], in inference mode but with the batch norms kept as separate layers: the network
/// as trained, which [`to_bytes`] can save again.
pub fn load_unfolded(bytes: Vec<u8>, device: &Device) -> Result<IchNet> {
    Ok(from_record_bytes(bytes, device, "the weights file")?.valid())
}

/// The default-configuration network with burnpack `bytes` loaded, in whichever input layout
/// ([`input::Layout`]) the file was trained for; `what` names the file in errors.
pub fn from_record_bytes(bytes: Vec<u8>, device: &Device, what: &str) -> Result<IchNet> {
    let len = bytes.len();
    let parse = |bytes: Vec<u8>| {
        ModuleRecord::from_bytes(Bytes::from_bytes_vec(bytes)).map_err(|e| {
            Error::Weights(format!(
                "{what} ({len} bytes) is not a burnpack record: {e}"
            ))
        })
    };
    let mut first_err = None;
    for layout in input::Layout::ALL {
        let record = parse(bytes.clone())?;
        let model = IchNetConfig::new()
            .with_in_channels(layout.channels())
            .init(device);
        match model.try_load_record(record) {
            Ok(m) => return Ok(m),
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    Err(Error::Weights(format!(
        "{what} ({len} bytes) does not fit this version's ICHNet: {}",
        first_err.map_or_else(String::new, |e| e.to_string())
    )))
}

/// Serialise a network's parameters (including batch-norm running statistics) to burnpack bytes.
pub fn to_bytes(model: IchNet) -> Result<Vec<u8>> {
    if model.is_folded() {
        // Its convolutions carry the batch norms while the norms are still in the record: saved,
        // it would load as a network that normalises twice.
        return Err(Error::Weights(
            "a network loaded for inference (batch norms folded) cannot be saved; load it with \
             model::load_unfolded to save it"
                .into(),
        ));
    }
    let bytes = model
        .into_record()
        .into_bytes()
        .map_err(|e| Error::Weights(format!("could not serialise the weights: {e}")))?;
    Ok(bytes.to_vec())
}
