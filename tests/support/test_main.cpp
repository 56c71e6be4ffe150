// GoogleTest main. gpu_* binaries exit 77 (CTest: skipped) where no CUDA device works.
#include <gtest/gtest.h>

#include <cstdio>
#include <string>

#include "otcal/context.hpp"

int main(int argc, char** argv) {
  const std::string self = argc > 0 ? argv[0] : "";
  const std::string base = self.substr(self.find_last_of('/') == std::string::npos ? 0 : self.find_last_of('/') + 1);
  if (base.rfind("gpu_", 0) == 0) {
    const otcal::SystemInfo info = otcal::system_info();
    if (info.devices.empty()) {
      std::printf("%s: skipped, no usable CUDA device (%s)\n", base.c_str(), info.cuda_status.c_str());
      return 77;
    }
  }
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
