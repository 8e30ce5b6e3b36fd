//! The handle table: values owned by the plugin, named by generation-checked handles so that a
//! released, forged or random handle is a clean `BAD_HANDLE`, never a dangling access.

use std::sync::{Mutex, MutexGuard};

use lct_abi::{LctHandle, LctStatus};
use lct_nodes::Value;

use crate::firewall::{Failure, Result};

struct Slot {
    generation: u32,
    value: Option<Value>,
}

/// Handle layout: high 32 bits generation, low 32 bits slot index + 1 (so 0 is never issued).
pub struct HandleTable {
    slots: Vec<Slot>,
    free: Vec<u32>,
    live: u64,
    first_generation: u32,
}

impl HandleTable {
    /// `first_generation` varies per process, so handles from another plugin or an earlier run
    /// are unlikely to alias a live one.
    pub const fn new(first_generation: u32) -> Self {
        Self {
            slots: Vec::new(),
            free: Vec::new(),
            live: 0,
            first_generation,
        }
    }

    pub fn insert(&mut self, value: Value) -> LctHandle {
        let index = match self.free.pop() {
            Some(index) => index,
            None => {
                self.slots.push(Slot {
                    generation: self.first_generation,
                    value: None,
                });
                (self.slots.len() - 1) as u32
            }
        };
        let slot = &mut self.slots[index as usize];
        slot.value = Some(value);
        self.live += 1;
        LctHandle(((slot.generation as u64) << 32) | (index as u64 + 1))
    }

    fn slot(&self, handle: LctHandle) -> Result<usize> {
        let bad = || {
            Failure::new(
                LctStatus::BAD_HANDLE,
                format!(
                    "handle {:#x} is not live (never issued, or already released)",
                    handle.0
                ),
            )
        };
        let index = (handle.0 & 0xffff_ffff).checked_sub(1).ok_or_else(bad)? as usize;
        let generation = (handle.0 >> 32) as u32;
        match self.slots.get(index) {
            Some(slot) if slot.generation == generation && slot.value.is_some() => Ok(index),
            _ => Err(bad()),
        }
    }

    /// A cheap clone of the value (large payloads are shared).
    pub fn get(&self, handle: LctHandle) -> Result<Value> {
        let index = self.slot(handle)?;
        Ok(self.slots[index].value.clone().expect("checked by slot()"))
    }

    pub fn release(&mut self, handle: LctHandle) -> Result<()> {
        let index = self.slot(handle)?;
        let slot = &mut self.slots[index];
        slot.value = None;
        // A new generation makes every copy of the old handle stale.
        slot.generation = slot.generation.wrapping_add(1);
        self.free.push(index as u32);
        self.live -= 1;
        Ok(())
    }

    pub fn live(&self) -> u64 {
        self.live
    }
}

static HANDLES: Mutex<HandleTable> = Mutex::new(HandleTable::new(0));

/// The process-wide table. Poisoning is ignored: no table operation panics halfway.
pub fn handles() -> MutexGuard<'static, HandleTable> {
    let mut table = HANDLES
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if table.slots.is_empty() && table.first_generation == 0 {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        table.first_generation = nanos | 1;
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn released_and_forged_handles_are_rejected() {
        let mut table = HandleTable::new(7);
        let a = table.insert(Value::Int(1));
        assert!(matches!(table.get(a), Ok(Value::Int(1))));
        table.release(a).unwrap();
        assert_eq!(table.get(a).unwrap_err().status, LctStatus::BAD_HANDLE);
        assert_eq!(table.release(a).unwrap_err().status, LctStatus::BAD_HANDLE);
        // The slot is reused with a new generation: the old handle stays dead.
        let b = table.insert(Value::Int(2));
        assert_eq!(a.0 & 0xffff_ffff, b.0 & 0xffff_ffff);
        assert_eq!(table.get(a).unwrap_err().status, LctStatus::BAD_HANDLE);
        assert!(matches!(table.get(b), Ok(Value::Int(2))));
        for forged in [0, 1, u64::MAX, b.0 + 1, b.0 ^ (1 << 40)] {
            assert!(table.get(LctHandle(forged)).is_err(), "{forged:#x}");
        }
        assert_eq!(table.live(), 1);
    }
}
