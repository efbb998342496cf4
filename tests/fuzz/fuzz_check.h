// TERN_FUZZ_CHECK(condition): a property every input must satisfy. A
// violation prints the condition and aborts, which libFuzzer reports as a
// crash and saves the input.
#ifndef TERN_TESTS_FUZZ_FUZZ_CHECK_H_
#define TERN_TESTS_FUZZ_FUZZ_CHECK_H_

#include <cstdio>
#include <cstdlib>

#define TERN_FUZZ_CHECK(condition)                                                            \
  do {                                                                                        \
    if (!(condition)) {                                                                       \
      std::fprintf(stderr, "%s:%d: fuzz check failed: %s\n", __FILE__, __LINE__, #condition); \
      std::abort();                                                                           \
    }                                                                                         \
  } while (0)

#endif  // TERN_TESTS_FUZZ_FUZZ_CHECK_H_
