//! The FMA-throughput kernel of a wide tier, for `mnv2c bench`'s "% of peak": `PEAK_CHAINS`
//! independent `acc = acc * m + c` chains in zmm (or ymm) registers, `steps` times, then the
//! accumulators stored. `fn(coefficients: *const f32 /* [m, c] */, out: *mut f32, steps: i64)`,
//! `steps >= 1`; writes `PEAK_CHAINS * lanes` floats to `out`.

use iced_x86::code_asm::registers::{ymm::get_ymm, zmm::get_zmm};
use iced_x86::code_asm::*;
use iced_x86::{IcedError, Register};

use super::Isa;

/// Independent chains: enough to cover the FMA latency (4 cycles) on two pipes, twice.
pub const PEAK_CHAINS: usize = 12;

/// Assembles the peak kernel for a wide `isa` (`None` for portable, which has its own).
pub fn assemble(isa: Isa) -> Result<Option<Vec<u8>>, IcedError> {
    let mut a = CodeAssembler::new(64)?;
    match isa {
        Isa::Avx512 => {
            let z = |i: usize| get_zmm(Register::ZMM0 + i as u32).unwrap_or(zmm31);
            a.vbroadcastss(zmm30, dword_ptr(rdi))?;
            a.vbroadcastss(zmm31, dword_ptr(rdi + 4))?;
            for i in 0..PEAK_CHAINS {
                a.vxorps(z(i), z(i), z(i))?;
            }
            let mut top = a.create_label();
            a.set_label(&mut top)?;
            for i in 0..PEAK_CHAINS {
                a.vfmadd213ps(z(i), zmm30, zmm31)?;
            }
            a.dec(rdx)?;
            a.jnz(top)?;
            for i in 0..PEAK_CHAINS {
                a.vmovups(zmmword_ptr(rsi + (i * 64) as i32), z(i))?;
            }
        }
        Isa::Avx2 => {
            let y = |i: usize| get_ymm(Register::YMM0 + i as u32).unwrap_or(ymm15);
            a.vbroadcastss(ymm14, dword_ptr(rdi))?;
            a.vbroadcastss(ymm15, dword_ptr(rdi + 4))?;
            for i in 0..PEAK_CHAINS {
                a.vxorps(y(i), y(i), y(i))?;
            }
            let mut top = a.create_label();
            a.set_label(&mut top)?;
            for i in 0..PEAK_CHAINS {
                a.vfmadd213ps(y(i), ymm14, ymm15)?;
            }
            a.dec(rdx)?;
            a.jnz(top)?;
            for i in 0..PEAK_CHAINS {
                a.vmovups(ymmword_ptr(rsi + (i * 32) as i32), y(i))?;
            }
        }
        Isa::Auto | Isa::Portable => return Ok(None),
    }
    a.vzeroupper()?;
    a.ret()?;
    a.assemble(0).map(Some)
}
