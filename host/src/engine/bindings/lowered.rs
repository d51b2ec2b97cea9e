//! The lists of model records the two hot 0.2 calls carry (`choose-eviction`'s resident models,
//! `select-model`'s candidates), lowered into the guest's memory in one pass.
//!
//! wasmtime's derived lowering writes a record field by field, and each write looks the
//! guest's memory up again: at 64 models that was a third of a `choose-eviction` call. [`Model`]
//! has 0.2's `model` record's exact type (its type check is the generated record's) and writes a
//! whole list with one borrow of the memory, at the canonical ABI's offsets, which
//! `offsets_follow_the_canonical_abi` checks against wasmtime's own layout. The calls that
//! carry these lists are typed here too ([`EvictionRequest`], [`SelectArgs`]); everything else
//! goes through the generated bindings. This leans on wasmtime's hidden `__internal` items,
//! which is why the workspace pins wasmtime's exact version.

use std::mem::MaybeUninit;

use wasmtime::component::__internal::{
    CanonicalAbiInfo, InstanceType, InterfaceType, LowerContext,
};
use wasmtime::component::{ComponentType, Lower, TypedFunc};

use super::v2::types;

/// Bytes one `model` record takes in linear memory.
const SIZE: usize = 88;

/// Where each field of `model` lies in its record (canonical ABI: each field at its own
/// alignment, in the WIT's order).
mod at {
    pub const INDEX: usize = 0;
    pub const STATE: usize = 4;
    pub const DEVICE: usize = 8;
    pub const SIZE_BYTES: usize = 16;
    pub const SIZE_MEASURED: usize = 24;
    pub const PRIORITY: usize = 28;
    pub const PINNED: usize = 32;
    pub const LAST_USED_MS: usize = 40;
    pub const LOADED_AT_MS: usize = 48;
    pub const USE_COUNT: usize = 56;
    pub const LOAD_COUNT: usize = 64;
    pub const IN_FLIGHT: usize = 68;
    pub const QUEUED: usize = 72;
    pub const ERRORS: usize = 76;
    pub const MEAN_LOAD_MS: usize = 80;
    pub const MEAN_LATENCY_MS: usize = 84;
}

/// 0.2's `model` record, lowered a list at a time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Model {
    pub index: u32,
    pub state: types::ModelState,
    pub device: u32,
    pub size_bytes: u64,
    pub size_measured: bool,
    pub priority: i32,
    pub pinned: bool,
    pub last_used_ms: u64,
    pub loaded_at_ms: u64,
    pub use_count: u64,
    pub load_count: u32,
    pub in_flight: u32,
    pub queued: u32,
    pub errors: u32,
    pub mean_load_ms: u32,
    pub mean_latency_ms: u32,
}

impl From<Model> for types::Model {
    fn from(m: Model) -> Self {
        types::Model {
            index: m.index,
            state: m.state,
            device: m.device,
            size_bytes: m.size_bytes,
            size_measured: m.size_measured,
            priority: m.priority,
            pinned: m.pinned,
            last_used_ms: m.last_used_ms,
            loaded_at_ms: m.loaded_at_ms,
            use_count: m.use_count,
            load_count: m.load_count,
            in_flight: m.in_flight,
            queued: m.queued,
            errors: m.errors,
            mean_load_ms: m.mean_load_ms,
            mean_latency_ms: m.mean_latency_ms,
        }
    }
}

impl Model {
    /// The record's bytes, padding zeroed.
    fn write(&self, out: &mut [u8; SIZE]) {
        fn put<const N: usize>(out: &mut [u8; SIZE], at: usize, bytes: [u8; N]) {
            out[at..at + N].copy_from_slice(&bytes);
        }
        *out = [0; SIZE];
        put(out, at::INDEX, self.index.to_le_bytes());
        put(out, at::STATE, [state_discriminant(self.state)]);
        put(out, at::DEVICE, self.device.to_le_bytes());
        put(out, at::SIZE_BYTES, self.size_bytes.to_le_bytes());
        put(out, at::SIZE_MEASURED, [u8::from(self.size_measured)]);
        put(out, at::PRIORITY, self.priority.to_le_bytes());
        put(out, at::PINNED, [u8::from(self.pinned)]);
        put(out, at::LAST_USED_MS, self.last_used_ms.to_le_bytes());
        put(out, at::LOADED_AT_MS, self.loaded_at_ms.to_le_bytes());
        put(out, at::USE_COUNT, self.use_count.to_le_bytes());
        put(out, at::LOAD_COUNT, self.load_count.to_le_bytes());
        put(out, at::IN_FLIGHT, self.in_flight.to_le_bytes());
        put(out, at::QUEUED, self.queued.to_le_bytes());
        put(out, at::ERRORS, self.errors.to_le_bytes());
        put(out, at::MEAN_LOAD_MS, self.mean_load_ms.to_le_bytes());
        put(out, at::MEAN_LATENCY_MS, self.mean_latency_ms.to_le_bytes());
    }
}

/// `model-state`'s case number, in the WIT's order.
fn state_discriminant(s: types::ModelState) -> u8 {
    match s {
        types::ModelState::Unloaded => 0,
        types::ModelState::Loading => 1,
        types::ModelState::Ready => 2,
        types::ModelState::Unloading => 3,
        types::ModelState::Failed => 4,
    }
}

// SAFETY: the type information is the generated `model` record's, whose layout `write` follows
// (checked by the tests below).
#[allow(unsafe_code)]
unsafe impl ComponentType for Model {
    type Lower = <types::Model as ComponentType>::Lower;
    const ABI: CanonicalAbiInfo = <types::Model as ComponentType>::ABI;

    fn typecheck(ty: &InterfaceType, types: &InstanceType<'_>) -> wasmtime::Result<()> {
        <types::Model as ComponentType>::typecheck(ty, types)
    }
}

// SAFETY: flat lowering is the generated record's; in memory, `write` fills exactly `SIZE`
// bytes at an offset wasmtime has checked for bounds and alignment.
#[allow(unsafe_code)]
unsafe impl Lower for Model {
    fn linear_lower_to_flat<T>(
        &self,
        cx: &mut LowerContext<'_, T>,
        ty: InterfaceType,
        dst: &mut MaybeUninit<Self::Lower>,
    ) -> wasmtime::Result<()> {
        types::Model::from(*self).linear_lower_to_flat(cx, ty, dst)
    }

    fn linear_lower_to_memory<T>(
        &self,
        cx: &mut LowerContext<'_, T>,
        ty: InterfaceType,
        offset: usize,
    ) -> wasmtime::Result<()> {
        Self::linear_store_list_to_memory(cx, ty, offset, std::slice::from_ref(self))
    }

    fn linear_store_list_to_memory<T>(
        cx: &mut LowerContext<'_, T>,
        _ty: InterfaceType,
        offset: usize,
        items: &[Self],
    ) -> wasmtime::Result<()> {
        let Some(dst) =
            (cx.as_slice_mut().get_mut(offset..)).and_then(|m| m.get_mut(..items.len() * SIZE))
        else {
            wasmtime::bail!("a list of models past the guest's memory");
        };
        for (m, out) in items.iter().zip(dst.chunks_exact_mut(SIZE)) {
            let out: &mut [u8; SIZE] = out.try_into().expect("chunks of SIZE");
            m.write(out);
        }
        Ok(())
    }
}

/// 0.2's `eviction-request`, its resident models lowered as one list.
#[derive(ComponentType, Lower)]
#[component(record)]
pub struct EvictionRequest {
    pub reason: types::EvictionReason,
    #[component(name = "needed-bytes")]
    pub needed_bytes: u64,
    pub device: u32,
    pub priority: i32,
    pub loaded: Vec<Model>,
    pub demand: Vec<u32>,
    pub telemetry: types::Telemetry,
}

/// `choose-eviction`, typed with [`EvictionRequest`].
pub type ChooseEviction = TypedFunc<(EvictionRequest,), (types::EvictionDecision,)>;

/// `select-model`'s arguments: the request, every candidate, the telemetry.
pub type SelectArgs = (types::Request, Vec<Model>, types::Telemetry);

/// `select-model`, typed with [`SelectArgs`].
pub type SelectModel = TypedFunc<SelectArgs, (types::Selection,)>;

#[cfg(test)]
mod tests {
    use super::*;

    /// The offsets `write` uses are where the canonical ABI puts each field, computed with
    /// wasmtime's own layout of each field's type, and the record is as large as wasmtime says.
    #[test]
    fn offsets_follow_the_canonical_abi() {
        let fields = [
            (<u32 as ComponentType>::ABI, at::INDEX),
            (<types::ModelState as ComponentType>::ABI, at::STATE),
            (<u32 as ComponentType>::ABI, at::DEVICE),
            (<u64 as ComponentType>::ABI, at::SIZE_BYTES),
            (<bool as ComponentType>::ABI, at::SIZE_MEASURED),
            (<i32 as ComponentType>::ABI, at::PRIORITY),
            (<bool as ComponentType>::ABI, at::PINNED),
            (<u64 as ComponentType>::ABI, at::LAST_USED_MS),
            (<u64 as ComponentType>::ABI, at::LOADED_AT_MS),
            (<u64 as ComponentType>::ABI, at::USE_COUNT),
            (<u32 as ComponentType>::ABI, at::LOAD_COUNT),
            (<u32 as ComponentType>::ABI, at::IN_FLIGHT),
            (<u32 as ComponentType>::ABI, at::QUEUED),
            (<u32 as ComponentType>::ABI, at::ERRORS),
            (<u32 as ComponentType>::ABI, at::MEAN_LOAD_MS),
            (<u32 as ComponentType>::ABI, at::MEAN_LATENCY_MS),
        ];
        let mut offset = 0usize;
        for (i, (abi, expected)) in fields.into_iter().enumerate() {
            let at = abi.next_field32_size(&mut offset);
            assert_eq!(at, expected, "field {i}");
        }
        assert_eq!(<types::Model as ComponentType>::SIZE32, SIZE);
        assert_eq!(<Model as ComponentType>::SIZE32, SIZE);
    }

    /// Each state is written as the case number the generated enum lowers it as.
    #[test]
    fn states_are_numbered_as_declared() {
        let states = [
            types::ModelState::Unloaded,
            types::ModelState::Loading,
            types::ModelState::Ready,
            types::ModelState::Unloading,
            types::ModelState::Failed,
        ];
        for (i, s) in states.into_iter().enumerate() {
            assert_eq!(usize::from(state_discriminant(s)), i);
            assert_eq!(state_discriminant(s), s as u8);
        }
    }
}
