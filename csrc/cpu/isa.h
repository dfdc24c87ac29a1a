// Instruction-set plumbing for the CPU kernels.
//
// Each kernel file (conv2d_cpu.cpp, depthwise_conv2d_cpu.cpp, pool2d_cpu.cpp) is compiled once per
// instruction set with -DFC_ISA=<isa> and puts its code in namespace fastconv::cpu::<isa>
// (FC_ISA_BEGIN / FC_ISA_END). Op headers declare each entry point once per instruction set with
// FC_FOR_EACH_ISA; dispatch.cpp defines the ISA-free entry points in fastconv::cpu that call the
// variant chosen at run time.
#pragma once
#include <string>

#define FC_ISA_BEGIN \
  namespace fastconv { \
  namespace cpu {      \
  namespace FC_ISA {
#define FC_ISA_END \
  }                \
  }                \
  }

#define FC_FOR_EACH_ISA(DECLS)  \
  namespace baseline { DECLS }  \
  namespace avx2 { DECLS }      \
  namespace avx512 { DECLS }

namespace fastconv {
namespace cpu {

enum class Isa { baseline = 0, avx2 = 1, avx512 = 2 };

Isa best_isa();                    // the best instruction set this CPU and this build support
Isa active_isa();                  // the one kernels use now (best_isa() unless lowered)
void set_isa(const std::string&);  // "baseline" | "avx2" | "avx512"; ValueError if unsupported
std::string isa_name(Isa);

}  // namespace cpu
}  // namespace fastconv
