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

/// The kernel body for one register class: `$reg(i)` is register `i`, `$ptr` the memory
/// operand of a full vector, `$m`/`$c` the registers of the coefficients.
macro_rules! peak_body {
    ($a:expr, $reg:expr, $ptr:ident, $bytes:expr, $m:expr, $c:expr) => {{
        let a: &mut CodeAssembler = $a;
        a.vbroadcastss($m, dword_ptr(rdi))?;
        a.vbroadcastss($c, dword_ptr(rdi + 4))?;
        for i in 0..PEAK_CHAINS {
            a.vxorps($reg(i), $reg(i), $reg(i))?;
        }
        let mut top = a.create_label();
        a.set_label(&mut top)?;
        for i in 0..PEAK_CHAINS {
            a.vfmadd213ps($reg(i), $m, $c)?;
        }
        a.dec(rdx)?;
        a.jnz(top)?;
        for i in 0..PEAK_CHAINS {
            a.vmovups($ptr(rsi + (i * $bytes) as i32), $reg(i))?;
        }
    }};
}

/// Assembles the peak kernel for a wide `isa` (`None` for portable, which has its own).
pub fn assemble(isa: Isa) -> Result<Option<Vec<u8>>, IcedError> {
    let mut a = CodeAssembler::new(64)?;
    let z = |i: usize| get_zmm(Register::ZMM0 + i as u32).unwrap_or(zmm31);
    let y = |i: usize| get_ymm(Register::YMM0 + i as u32).unwrap_or(ymm15);
    match isa {
        Isa::Avx512 => peak_body!(&mut a, z, zmmword_ptr, 64, zmm30, zmm31),
        Isa::Avx2 => peak_body!(&mut a, y, ymmword_ptr, 32, ymm14, ymm15),
        Isa::Auto | Isa::Portable => return Ok(None),
    }
    a.vzeroupper()?;
    a.ret()?;
    a.assemble(0).map(Some)
}
