// Stands in for the CUDA toolkit's cuda_runtime.h in the emulated build
// (tests/test_cuda_emulation.py puts this folder first on the include path).
#include "cuda_emu.h"
