// Native unit tests of vae_ext, run by ctest one group at a time:
//   philox        Philox4x32-10 against the published Random123 known-answer vectors
//   normals       the Box-Muller sampler: its building blocks and the statistics of 1e6 normals
//   math          the shared KL and reparameterization math (csrc/vae_math.h) against
//                 long-double references at edge values
//   registration  the six ops are in the dispatcher with their schemas and a CPU kernel
//   ops           each op called through the dispatcher, compared element by element with
//                 the math; the sampled eps is Philox's, bit for bit
//   ops_empty     the same with an empty batch or zero-size latents
//   autograd      backward through the ops' C++ autograd kernels (skipped when not built)
//   cuda          the CUDA kernels against the same math (skipped without a GPU)
//
//   vae_ext_native_tests                run every group
//   vae_ext_native_tests GROUP          run one group
//   vae_ext_native_tests --list-groups  print the groups, one a line
// Exit status: 0 when every test run passed, 1 on a failure, 77 when every test was skipped.
//
// Nothing here calls a symbol of the vae_ext library: the registration and ops groups pass
// only if linking kept the library whose static initialisers register the ops.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/util/Exception.h>
#include <c10/util/StringUtil.h>
#include <vae_ext/op_calls.h>
#include <vae_ext/philox.h>
#include <vae_ext/vae_math.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <exception>
#include <functional>
#include <iostream>
#include <limits>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

namespace {

// --------------------------------------------------------------------------- harness

struct TestCase {
  std::string group, name;
  std::function<void()> body;
};

std::vector<TestCase>& registry() {
  static std::vector<TestCase> tests;
  return tests;
}

struct Registrar {
  Registrar(const char* group, const char* name, void (*body)()) {
    registry().push_back({group, name, body});
  }
};

struct Skipped {
  std::string reason;
};

int g_failures = 0;  // failed checks in the running test

void fail(const char* file, int line, const std::string& what) {
  constexpr int kShown = 8;
  if (g_failures < kShown) std::cerr << "    " << file << ":" << line << ": " << what << "\n";
  if (g_failures == kShown) std::cerr << "    (further failures of this test not shown)\n";
  ++g_failures;
}

#define TEST(group, name)                                                            \
  void test_##group##_##name();                                                      \
  const Registrar registrar_##group##_##name(#group, #name, &test_##group##_##name); \
  void test_##group##_##name()

#define EXPECT(cond, ...)                                                                 \
  do {                                                                                    \
    if (!(cond)) fail(__FILE__, __LINE__, c10::str("EXPECT(" #cond ") ", ##__VA_ARGS__)); \
  } while (0)

// Runs `statement` and checks that it throws ExceptionType with `needle` in its message.
#define EXPECT_THROWS(ExceptionType, needle, statement)                                            \
  do {                                                                                             \
    bool thrown = false;                                                                           \
    try {                                                                                          \
      statement;                                                                                   \
    } catch (const ExceptionType& e) {                                                             \
      thrown = true;                                                                               \
      const std::string what = e.what_without_backtrace();                                         \
      EXPECT(what.find(needle) != std::string::npos, "message '", what, "' lacks '", needle, "'"); \
    }                                                                                              \
    EXPECT(thrown, #statement " did not throw " #ExceptionType);                                   \
  } while (0)

int run_tests(const std::string& only_group) {
  int passed = 0, failed = 0, skipped = 0;
  for (const TestCase& t : registry()) {
    if (!only_group.empty() && t.group != only_group) continue;
    g_failures = 0;
    std::string skip_reason;
    try {
      t.body();
    } catch (const Skipped& s) {
      skip_reason = s.reason;
    } catch (const c10::Error& e) {
      fail(__FILE__, __LINE__, c10::str("unexpected exception: ", e.what_without_backtrace()));
    } catch (const std::exception& e) {
      fail(__FILE__, __LINE__, c10::str("unexpected exception: ", e.what()));
    }
    const std::string id = t.group + "." + t.name;
    if (g_failures > 0) {
      ++failed;
      std::cout << "[FAIL] " << id << " (" << g_failures << " failed checks)\n";
    } else if (!skip_reason.empty()) {
      ++skipped;
      std::cout << "[SKIP] " << id << ": " << skip_reason << "\n";
    } else {
      ++passed;
      std::cout << "[PASS] " << id << "\n";
    }
  }
  if (passed + failed + skipped == 0) {
    std::cerr << "no test in group '" << only_group << "'\n";
    return 1;
  }
  std::cout << passed << " passed, " << failed << " failed, " << skipped << " skipped\n";
  if (failed > 0) return 1;
  return passed == 0 ? 77 : 0;
}

// --------------------------------------------------------------------------- numbers

using LD = long double;
static_assert(std::numeric_limits<LD>::digits >= 64,
              "the references need a long double with at least 64 mantissa bits");

template <typename T>
constexpr LD kEps = std::numeric_limits<T>::epsilon();

// The spacing of T's numbers at |x| (its ulp), for x in T's normal range or 0.
template <typename T>
LD ulp_of(LD x) {
  const LD smallest = std::numeric_limits<T>::denorm_min();
  if (x == 0) return smallest;
  const int exponent = std::ilogb(x);
  return std::max(smallest, std::ldexp(1.0L, exponent - (std::numeric_limits<T>::digits - 1)));
}

template <typename T>
LD ulps(T computed, LD reference) {
  return std::fabs(static_cast<LD>(computed) - reference) / ulp_of<T>(reference);
}

// |computed - reference| in units of eps_T * scale, where scale is the sum of the magnitudes
// the formula's rounding errors are proportional to.
template <typename T>
LD scaled_error(T computed, LD reference, LD scale) {
  return std::fabs(static_cast<LD>(computed) - reference) / (kEps<T> * scale);
}

bool same_bits(float a, float b) { return std::memcmp(&a, &b, sizeof a) == 0; }

// expm1(x) - x without cancellation: its Taylor series x^2/2! + x^3/3! + ... for |x| < 1/2.
LD expm1_minus_x(LD x) {
  if (std::fabs(x) >= 0.5L) return std::expm1(x) - x;  // loses at most 3 of 64 bits
  LD term = x * x / 2, sum = 0;
  for (int k = 3; k < 40 && term != 0; ++k) {
    sum += term;
    term *= x / k;
  }
  return sum;
}

// KL(N(mu, e^lv) || N(pmu, e^plv)) by the textbook formula, in long double.
LD kl_textbook(LD mu, LD lv, LD pmu, LD plv) {
  const LD d = mu - pmu;
  return 0.5L * (plv - lv + (std::exp(lv) + d * d) * std::exp(-plv) - 1);
}

// The sum of the magnitudes of the textbook formula's terms: its long-double rounding error
// is about 2^-64 times this, so it is accurate to double precision and beyond where this is
// within 2^6 of the result.
LD kl_textbook_magnitude(LD mu, LD lv, LD pmu, LD plv) {
  const LD d = mu - pmu;
  return 0.5L * (std::fabs(plv) + std::fabs(lv) + (std::exp(lv) + d * d) * std::exp(-plv) + 1);
}

LD kl_series(LD mu, LD lv, LD pmu, LD plv) {
  const LD d = mu - pmu;
  return 0.5L * (d * d * std::exp(-plv) + expm1_minus_x(lv - plv));
}

LD kl_reference(LD mu, LD lv, LD pmu, LD plv) {
  const LD textbook = kl_textbook(mu, lv, pmu, plv);
  if (kl_textbook_magnitude(mu, lv, pmu, plv) <= 64 * std::fabs(textbook)) return textbook;
  return kl_series(mu, lv, pmu, plv);
}

// What the stable form's rounding errors scale with: each term, and the rounding of
// lv - plv magnified by expm1's slope.
LD kl_error_scale(LD mu, LD lv, LD pmu, LD plv) {
  const LD d = mu - pmu, dlv = lv - plv;
  return 0.5L * (d * d * std::exp(-plv) + std::fabs(std::expm1(dlv)) * (1 + std::fabs(dlv)) +
                 std::fabs(dlv));
}

// --------------------------------------------------------------------------- philox

struct PhiloxKat {
  vae_ext::Uint4 counter;
  vae_ext::PhiloxKey key;
  vae_ext::Uint4 expected;
};

// Random123's kat_vectors for philox4x32_10 (Salmon et al., SC11).
const PhiloxKat kPhiloxKats[] = {
    {{0u, 0u, 0u, 0u}, {0u, 0u}, {0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u}},
    {{0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu},
     {0xffffffffu, 0xffffffffu},
     {0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu}},
    {{0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u},
     {0xa4093822u, 0x299f31d0u},
     {0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u}},
};

bool operator==(const vae_ext::Uint4& a, const vae_ext::Uint4& b) {
  return a.x0 == b.x0 && a.x1 == b.x1 && a.x2 == b.x2 && a.x3 == b.x3;
}

std::string hex(const vae_ext::Uint4& v) {
  char buffer[64];
  std::snprintf(buffer, sizeof buffer, "{%08x %08x %08x %08x}", v.x0, v.x1, v.x2, v.x3);
  return buffer;
}

TEST(philox, known_answer_vectors) {
  for (const PhiloxKat& kat : kPhiloxKats) {
    const vae_ext::Uint4 got = vae_ext::philox4x32_10(kat.counter, kat.key);
    EXPECT(got == kat.expected, "counter ", hex(kat.counter), ": got ", hex(got), ", expected ",
           hex(kat.expected));
  }
}

TEST(philox, seed_splits_into_key_words) {
  const vae_ext::PhiloxKey key = vae_ext::philox_key(0x0123456789abcdefLL);
  EXPECT(key.k0 == 0x89abcdefu && key.k1 == 0x01234567u, key.k0, " ", key.k1);
  const vae_ext::PhiloxKey minus_one = vae_ext::philox_key(-1);
  EXPECT(minus_one.k0 == 0xffffffffu && minus_one.k1 == 0xffffffffu);
}

TEST(philox, block_index_is_the_counters_low_words) {
  const vae_ext::PhiloxKey key{0xa4093822u, 0x299f31d0u};
  const uint64_t block = 0x85a308d3243f6a88ull;
  const vae_ext::Uint4 expected = vae_ext::philox4x32_10({0x243f6a88u, 0x85a308d3u, 0u, 0u}, key);
  EXPECT(vae_ext::philox_block(key, block) == expected);
  EXPECT(!(vae_ext::philox_block(key, 1ull << 32) == vae_ext::philox_block(key, 0)));
}

// --------------------------------------------------------------------------- normals

TEST(normals, uniforms_are_odd_multiples_of_2_pow_minus_24) {
  EXPECT(vae_ext::uniform_open01(0u) == 0x1p-24f);
  EXPECT(vae_ext::uniform_open01(0xffffffffu) == 1.0f - 0x1p-24f);
  EXPECT(vae_ext::uniform_open01(0x80000000u) == 0.5f + 0x1p-24f);
  EXPECT(vae_ext::uniform_open01(0x000001ffu) == 0x1p-24f, "the low 9 bits are dropped");
}

TEST(normals, log_within_one_ulp) {
  // Every 997th uniform the sampler can produce, plus both ends.
  LD worst = 0;
  for (uint32_t k = 0; k < (1u << 23); k += 997) {
    const float u = vae_ext::uniform_open01(k << 9);
    worst = std::max(worst, ulps(vae_ext::log_positive(u), std::log(static_cast<LD>(u))));
  }
  for (const float u : {0x1p-24f, 1.0f - 0x1p-24f, 0.5f, 0.70710677f, 0.70710683f}) {
    worst = std::max(worst, ulps(vae_ext::log_positive(u), std::log(static_cast<LD>(u))));
  }
  EXPECT(worst <= 1, "worst error ", static_cast<double>(worst), " ulp");
}

TEST(normals, sincos_within_one_ulp_of_one) {
  const LD two_pi = 2 * 3.141592653589793238462643383279502884L;
  LD worst = 0;
  for (uint32_t k = 0; k < (1u << 23); k += 991) {
    const float u = vae_ext::uniform_open01(k << 9);
    float s, c;
    vae_ext::sincos_2pi(u, &s, &c);
    const LD angle = two_pi * u;
    worst = std::max({worst, std::fabs(s - std::sin(angle)), std::fabs(c - std::cos(angle))});
  }
  EXPECT(worst <= 0x1p-23L, "worst absolute error ", static_cast<double>(worst));
}

struct Moments {
  LD n = 0, sum = 0, sum2 = 0, sum3 = 0, sum4 = 0;
  void add(LD x) {
    n += 1;
    sum += x;
    sum2 += x * x;
    sum3 += x * x * x;
    sum4 += x * x * x * x;
  }
};

// Checks |value - expected| <= 5 standard errors (sd / sqrt(n)).
#define EXPECT_WITHIN_5_SE(value, expected, sd, n)                                               \
  EXPECT(std::fabs((value) - (expected)) <= 5 * (sd) / std::sqrt(static_cast<LD>(n)),            \
         #value " = ", static_cast<double>(value), ", expected ", static_cast<double>(expected), \
         " +- ", static_cast<double>(5 * (sd) / std::sqrt(static_cast<LD>(n))))

TEST(normals, box_muller_statistics) {
  constexpr uint64_t kCount = 1u << 20;
  const vae_ext::PhiloxKey key = vae_ext::philox_key(0x5eed5eed1234LL);
  Moments m;
  LD pair_product = 0, lag_product = 0, previous = 0, largest = 0;
  uint64_t beyond1 = 0, beyond2 = 0, beyond3 = 0;
  for (uint64_t block = 0; block < kCount / 4; ++block) {
    const vae_ext::Float4 f = vae_ext::normal_block(key, block);
    const float values[4] = {f.n0, f.n1, f.n2, f.n3};
    pair_product += static_cast<LD>(f.n0) * f.n1 + static_cast<LD>(f.n2) * f.n3;
    for (const float v : values) {
      const LD x = v;
      m.add(x);
      lag_product += x * previous;
      previous = x;
      largest = std::max(largest, std::fabs(x));
      beyond1 += std::fabs(x) > 1;
      beyond2 += std::fabs(x) > 2;
      beyond3 += std::fabs(x) > 3;
    }
  }
  const LD n = m.n, mean = m.sum / n, second = m.sum2 / n;
  // Moments of N(0, 1): E x^2 = 1, E x^3 = 0, E x^4 = 3; Var x^k = E x^2k - (E x^k)^2.
  EXPECT_WITHIN_5_SE(mean, 0.0L, 1.0L, n);
  EXPECT_WITHIN_5_SE(second, 1.0L, std::sqrt(2.0L), n);
  EXPECT_WITHIN_5_SE(m.sum3 / n, 0.0L, std::sqrt(15.0L), n);
  EXPECT_WITHIN_5_SE(m.sum4 / n, 3.0L, std::sqrt(96.0L), n);
  // Box-Muller's two normals of a pair, and neighbouring elements, are uncorrelated.
  EXPECT_WITHIN_5_SE(pair_product / (n / 2), 0.0L, 1.0L, n / 2);
  EXPECT_WITHIN_5_SE(lag_product / (n - 1), 0.0L, 1.0L, n - 1);
  // Tail probabilities P(|x| > t) = erfc(t / sqrt 2), binomial standard error.
  const std::pair<uint64_t, LD> tails[] = {{beyond1, 1}, {beyond2, 2}, {beyond3, 3}};
  for (const auto& [count, t] : tails) {
    const LD p = std::erfc(t / std::sqrt(2.0L));
    EXPECT_WITHIN_5_SE(count / n, p, std::sqrt(p * (1 - p)), n);
  }
  // A uniform is at least 2^-24, so the radius is at most sqrt(-2 log 2^-24) = 5.768.
  EXPECT(largest <= 5.7686L && largest > 4.5L, "largest |x| ", static_cast<double>(largest));
}

TEST(normals, normal_at_indexes_blocks_of_four) {
  const vae_ext::PhiloxKey key = vae_ext::philox_key(42);
  const vae_ext::Float4 block = vae_ext::normal_block(key, 1000);
  EXPECT(same_bits(vae_ext::normal_at(key, 4000), block.n0));
  EXPECT(same_bits(vae_ext::normal_at(key, 4001), block.n1));
  EXPECT(same_bits(vae_ext::normal_at(key, 4002), block.n2));
  EXPECT(same_bits(vae_ext::normal_at(key, 4003), block.n3));
}

// --------------------------------------------------------------------------- math

// Natural log of sigma^2 for sigma = 1e-3, the |mu| >> sigma case.
const LD kLogVarTinySigma = 2 * std::log(1e-3L);

// The accuracy the math is built on, in ulps: csrc/vae_math.h's own expm1 (float 4 ulp, its
// exp 1.01 ulp; double 4 ulp, its exp 1 ulp: tests/test_exp_accuracy.py), with a margin for
// double. A KL element or gradient adds a few roundings: one more ulp.
template <typename T>
constexpr LD kExpm1Ulps = std::is_same_v<T, float> ? 4 : 6;
template <typename T>
constexpr LD kResultUlps = kExpm1Ulps<T> + 1;

template <typename T>
void check_kl_ulps(T mu, T lv, T pmu, T plv, LD max_ulps) {
  const LD ref = kl_reference(mu, lv, pmu, plv);
  const T got = vae_ext::kl_general<T>(mu, lv, pmu, plv);
  EXPECT(ulps(got, ref) <= max_ulps, "kl_general(", mu, ", ", lv, ", ", pmu, ", ", plv, ") = ", got,
         ", reference ", static_cast<double>(ref), ": ", static_cast<double>(ulps(got, ref)),
         " ulp");
}

template <typename T>
void check_kl_edges() {
  const T big = 30, lv_tiny_sigma = static_cast<T>(kLogVarTinySigma);
  // Large and tiny variances against the standard prior and against each other.
  const LD bound = kResultUlps<T>;
  for (const T lv : {big, -big, T(5), T(-5), T(-2.5)}) check_kl_ulps<T>(0, lv, 0, 0, bound);
  for (const T lv : {big, -big}) check_kl_ulps<T>(T(0.7), lv, 0, 0, bound);
  check_kl_ulps<T>(T(1.5), -big, T(-0.5), 1 - big, bound);
  check_kl_ulps<T>(T(0.25), big, 0, -big, bound);
  check_kl_ulps<T>(T(0.25), -big, 0, big, bound);
  // |mu| >> sigma: mu = 1e4, sigma = 1e-3, around the standard and a shifted prior.
  for (const T mu : {T(1e4), T(-1e4)}) check_kl_ulps<T>(mu, lv_tiny_sigma, 0, 0, bound);
  check_kl_ulps<T>(T(1e4), lv_tiny_sigma, T(1e4) - T(0.5), T(-2), bound);
}

TEST(math, kl_at_edge_values_double) { check_kl_edges<double>(); }
TEST(math, kl_at_edge_values_float) { check_kl_edges<float>(); }

template <typename T>
void check_kl_q_equals_p() {
  const T cases[][2] = {{0, 0},
                        {T(3.7), T(-2.3)},
                        {T(1e4), static_cast<T>(kLogVarTinySigma)},
                        {T(-5), 30},
                        {T(0.1), -30}};
  for (const auto& c : cases) {
    EXPECT(vae_ext::kl_general<T>(c[0], c[1], c[0], c[1]) == 0, c[0], " ", c[1]);
    const auto grad = vae_ext::kl_grad_general<T>(T(1.25), c[0], c[1], c[0], c[1]);
    EXPECT(grad.mu == 0 && grad.lv == 0 && grad.plv == 0, grad.mu, " ", grad.lv, " ", grad.plv);
  }
  EXPECT(vae_ext::kl_standard<T>(0, 0) == 0);
}

TEST(math, kl_is_exactly_zero_when_q_equals_p_double) { check_kl_q_equals_p<double>(); }
TEST(math, kl_is_exactly_zero_when_q_equals_p_float) { check_kl_q_equals_p<float>(); }

// Where lv is close to plv, 1/2 (expm1(dlv) - dlv) ~ dlv^2 / 4 comes out of a subtraction that
// cancels: its error is bounded by eps times the terms, not by an ulp of the result.
// (At |dlv| = 1e-8 a float's expm1(dlv) - dlv is 0 and a double's has about 1e-8 relative
// error; KL's absolute error stays below eps * |dlv|.)
template <typename T>
void check_kl_near_p() {
  const T tiny = T(1e-8), small = T(1e-3);
  const T cases[][4] = {{0, tiny, 0, 0},
                        {0, -tiny, 0, 0},
                        {0, small, 0, 0},
                        {0, -small, 0, 0},
                        {0, T(0.75), 0, 0},
                        {T(1.5), T(30), T(-0.5), T(29)},
                        {T(0.5), T(2) + small, T(0.5), T(2)},
                        {T(1e-4), tiny, 0, 0},
                        {0, T(-30) + T(1e-5) * 30, 0, T(-30)}};
  for (const auto& c : cases) {
    const LD ref = kl_reference(c[0], c[1], c[2], c[3]);
    const T got = vae_ext::kl_general<T>(c[0], c[1], c[2], c[3]);
    const LD scale = kl_error_scale(c[0], c[1], c[2], c[3]);
    EXPECT(got >= 0 && scaled_error(got, ref, scale) <= kResultUlps<T>, "kl_general(", c[0], ", ",
           c[1], ", ", c[2], ", ", c[3], ") = ", got, ", reference ", static_cast<double>(ref));
  }
}

TEST(math, kl_near_the_prior_double) { check_kl_near_p<double>(); }
TEST(math, kl_near_the_prior_float) { check_kl_near_p<float>(); }

TEST(math, long_double_references_agree) {
  // Where the textbook formula is accurate in long double, the series form agrees with it.
  const LD cases[][4] = {{0.3L, 0.7L, 0, 0},
                         {2, -0.6L, 0.5L, 0.1L},
                         {1e4L, -13.8L, 0, 0},
                         {0.25L, 30, 0, -30},
                         {0, 0.9L, 0, 0.2L}};
  for (const auto& c : cases) {
    const LD textbook = kl_textbook(c[0], c[1], c[2], c[3]);
    const LD series = kl_series(c[0], c[1], c[2], c[3]);
    EXPECT(std::fabs(textbook - series) <= 0x1p-58L * std::fabs(textbook),
           static_cast<double>(textbook), " vs ", static_cast<double>(series));
  }
  // Near q = p the series is the accurate one: KL ~ dlv^2 / 4 for the standard prior.
  const LD x = 1e-8L;
  EXPECT(std::fabs(kl_series(0, x, 0, 0) / (x * x / 4) - 1) <= 1e-8L);
}

template <typename T>
void check_kl_gradients() {
  const T g = T(-1.75), big = 30;
  const T cases[][4] = {{T(0.7), big, 0, 0},
                        {T(0.7), -big, 0, 0},
                        {T(1e4), static_cast<T>(kLogVarTinySigma), T(1e4) - T(0.5), T(-2)},
                        {T(-1.5), T(1e-8), T(0.5), 0},
                        {T(2), T(-3), T(-1), T(4)}};
  for (const auto& c : cases) {
    const LD mu = c[0], lv = c[1], pmu = c[2], plv = c[3], d = mu - pmu;
    const auto grad = vae_ext::kl_grad_general<T>(g, c[0], c[1], c[2], c[3]);
    // Textbook derivatives, expm1 written out as exp - 1 where that does not cancel.
    const LD em1 = std::fabs(lv - plv) > 0.5L ? std::exp(lv - plv) - 1 : std::expm1(lv - plv);
    const LD ref_mu = g * d * std::exp(-plv);
    const LD ref_lv = g * 0.5L * em1;
    const LD ref_plv = g * 0.5L * (1 - (std::exp(lv) + d * d) * std::exp(-plv));
    EXPECT(ulps(grad.mu, ref_mu) <= 2, "d/dmu ", grad.mu, " vs ", static_cast<double>(ref_mu));
    EXPECT(ulps(grad.lv, ref_lv) <= kResultUlps<T>, "d/dlv ", grad.lv, " vs ",
           static_cast<double>(ref_lv));
    const LD plv_scale = 0.5L * std::fabs(g) * (std::fabs(em1) + d * d * std::exp(-plv));
    EXPECT(scaled_error(grad.plv, ref_plv, plv_scale) <= kResultUlps<T>, "d/dplv ", grad.plv,
           " vs ", static_cast<double>(ref_plv));
  }
}

TEST(math, kl_gradients_double) { check_kl_gradients<double>(); }
TEST(math, kl_gradients_float) { check_kl_gradients<float>(); }

template <typename T>
void check_reparam_edges() {
  const T big = 30, lv_tiny_sigma = static_cast<T>(kLogVarTinySigma);
  const T cases[][3] = {{0, big, T(-2.3)},
                        {0, -big, T(-2.3)},
                        {T(1.5), big, T(0.4)},
                        {T(1e4), lv_tiny_sigma, T(1.7)},
                        {T(-1e4), lv_tiny_sigma, T(-3.1)},
                        {T(0.5), T(1e-8), T(0.3)}};
  for (const auto& c : cases) {
    const LD sigma = std::exp(0.5L * c[1]);
    const LD ref_z = c[0] + c[2] * sigma;
    const T z = vae_ext::reparam<T>(c[0], c[1], c[2]);
    EXPECT(ulps(z, ref_z) <= 2, "reparam(", c[0], ", ", c[1], ", ", c[2], ") = ", z, " vs ",
           static_cast<double>(ref_z));
    const T g = T(0.625);
    const LD ref_grad = g * 0.5L * c[2] * sigma;
    const T grad = vae_ext::reparam_grad_logvar<T>(g, c[1], c[2]);
    EXPECT(ulps(grad, ref_grad) <= 2, "reparam_grad_logvar = ", grad, " vs ",
           static_cast<double>(ref_grad));
  }
}

TEST(math, reparameterization_at_edge_values_double) { check_reparam_edges<double>(); }
TEST(math, reparameterization_at_edge_values_float) { check_reparam_edges<float>(); }

// kl_standard is kl_general with a N(0, 1) prior, to the bit (exp(-0) = 1 exactly).
template <typename T>
void check_standard_is_general_with_zero_prior() {
  uint64_t block = 0;
  const vae_ext::PhiloxKey key = vae_ext::philox_key(7);
  for (int i = 0; i < 2000; ++i) {
    const vae_ext::Float4 r = vae_ext::normal_block(key, block++);
    const T mu = T(r.n0) * 3, lv = T(r.n1) * 4, g = T(r.n2);
    EXPECT(vae_ext::kl_standard<T>(mu, lv) == vae_ext::kl_general<T>(mu, lv, 0, 0), mu, " ", lv);
    const auto s = vae_ext::kl_grad_standard<T>(g, mu, lv);
    const auto q = vae_ext::kl_grad_general<T>(g, mu, lv, 0, 0);
    EXPECT(s.mu == q.mu && s.lv == q.lv && s.plv == q.plv, mu, " ", lv);
  }
}

TEST(math, standard_prior_is_general_prior_at_zero_double) {
  check_standard_is_general_with_zero_prior<double>();
}
TEST(math, standard_prior_is_general_prior_at_zero_float) {
  check_standard_is_general_with_zero_prior<float>();
}

// --------------------------------------------------------------------------- dispatcher

using OptTensor = std::optional<at::Tensor>;

// The ops, typed as their schemas (csrc/op_calls.h): typed<>() checks each C++ signature.
using vae_ext::op_calls::gaussian_kl;
using vae_ext::op_calls::reparameterize;
using vae_ext::op_calls::reparameterize_backward;
using vae_ext::op_calls::reparameterize_kl;
using vae_ext::op_calls::reparameterize_kl_backward;
using vae_ext::op_calls::reparameterize_sampled;
using FourTensors = vae_ext::op_calls::Grads4;

const char* const kSchemas[] = {
    "vae_ext::reparameterize(Tensor mu, Tensor logvar, Tensor eps) -> Tensor",
    "vae_ext::reparameterize_sampled(Tensor mu, Tensor logvar, Tensor seed) -> Tensor",
    "vae_ext::reparameterize_backward(Tensor grad_z, Tensor logvar, Tensor? eps, Tensor? seed) "
    "-> Tensor",
    "vae_ext::gaussian_kl(Tensor mu, Tensor logvar, Tensor? prior_mu, Tensor? prior_logvar) -> "
    "Tensor",
    "vae_ext::reparameterize_kl(Tensor mu, Tensor logvar, Tensor? eps, Tensor? seed, Tensor? "
    "prior_mu, Tensor? prior_logvar) -> (Tensor, Tensor)",
    "vae_ext::reparameterize_kl_backward(Tensor? grad_z, Tensor? grad_kl, Tensor mu, Tensor "
    "logvar, Tensor? eps, Tensor? seed, Tensor? prior_mu, Tensor? prior_logvar, bool "
    "prior_grads) -> (Tensor, Tensor, Tensor, Tensor)",
};

std::string op_name(const std::string& schema) { return schema.substr(0, schema.find('(')); }

TEST(registration, every_op_has_its_schema_and_a_cpu_kernel) {
  for (const std::string schema : kSchemas) {
    const auto handle = c10::Dispatcher::singleton().findOp({op_name(schema), ""});
    EXPECT(handle.has_value(), op_name(schema), " is not registered: was libvae_ext dropped?");
    if (!handle) continue;
    EXPECT(c10::toString(handle->schema()) == schema, c10::toString(handle->schema()));
    EXPECT(handle->hasKernelForDispatchKey(c10::DispatchKey::CPU), schema);
  }
}

TEST(registration, typed_handles_match_the_schemas) {
  // Each wrapper's first call runs typed<>(), which throws on a signature mismatch.
  const at::Tensor x = at::ones({2, 3}, at::kDouble), seed = at::full({1}, 5, at::kLong);
  EXPECT(reparameterize(x, x, x).defined());
  EXPECT(reparameterize_sampled(x, x, seed).defined());
  EXPECT(reparameterize_backward(x, x, x, std::nullopt).defined());
  EXPECT(gaussian_kl(x, x, std::nullopt, std::nullopt).defined());
  EXPECT(
      std::get<1>(reparameterize_kl(x, x, x, std::nullopt, std::nullopt, std::nullopt)).defined());
  EXPECT(std::get<0>(reparameterize_kl_backward(x, at::ones({2}, at::kDouble), x, x, x,
                                                std::nullopt, std::nullopt, std::nullopt, false))
             .defined());
}

// --------------------------------------------------------------------------- op checks

// Values of a tensor broadcast to `shape`, as long doubles in the flat [B, D] order.
std::vector<LD> values(const at::Tensor& t, at::IntArrayRef shape) {
  const at::Tensor flat = t.expand(shape).to(at::kCPU, at::kDouble).contiguous().reshape({-1});
  const double* p = flat.const_data_ptr<double>();
  return std::vector<LD>(p, p + flat.numel());
}

LD compute_eps(at::ScalarType dtype) { return dtype == at::kDouble ? kEps<double> : kEps<float>; }

// The per-sample KL's dtype (and grad_kl's).
at::ScalarType kl_dtype(at::ScalarType dtype) {
  return dtype == at::kDouble ? at::kDouble : at::kFloat;
}

// Half an ulp at |x| of a stored dtype narrower than the compute type (the elementwise
// tolerances already include the compute type's own rounding).
LD storage_rounding(at::ScalarType stored, LD x) {
  if (stored == at::kDouble || stored == at::kFloat || x == 0) return 0;
  const int digits = stored == at::kBFloat16 ? 8 : 11;
  return std::ldexp(1.0L, std::ilogb(x) - digits);
}

enum class Prior { kNone, kScalar, kPerLatent, kPerLatentLeadingOne, kFull };

const char* prior_name(Prior p) {
  switch (p) {
    case Prior::kNone: return "none";
    case Prior::kScalar: return "scalar";
    case Prior::kPerLatent: return "per-latent";
    case Prior::kPerLatentLeadingOne: return "[1]+per-latent";
    default: return "full";
  }
}

struct Setup {
  at::ScalarType dtype;
  std::vector<int64_t> shape;
  bool strided_rows;  // mu and logvar are the two halves of one [B, 2 * C, ...] tensor
  Prior prior;
  c10::Device device = at::kCPU;

  std::string describe() const {
    return c10::str(dtype, " ", c10::IntArrayRef(shape), strided_rows ? " strided" : "", " prior ",
                    prior_name(prior), " ", device);
  }
};

// The inputs of one op call, made reproducibly from the generator state, and their values.
struct Inputs {
  Setup setup;
  at::Tensor mu, logvar, eps, seed, grad_z, grad_kl;
  OptTensor prior_mu, prior_logvar;
  int64_t rows = 0, cols = 0;
  std::vector<LD> v_mu, v_lv, v_eps, v_pmu, v_plv, v_gz, v_gkl;
};

at::Tensor make_prior(const Setup& s, double mean, double scale) {
  std::vector<int64_t> shape;
  switch (s.prior) {
    case Prior::kScalar: break;
    case Prior::kPerLatent: shape.assign(s.shape.begin() + 1, s.shape.end()); break;
    case Prior::kPerLatentLeadingOne:
      shape = s.shape;
      shape[0] = 1;
      break;
    default: shape = s.shape;
  }
  return (at::randn(shape, at::kDouble) * scale + mean).to(s.device, s.dtype);
}

Inputs make_inputs(const Setup& s, int64_t seed_value) {
  at::manual_seed(1000 + seed_value);
  Inputs in;
  in.setup = s;
  const auto options = at::TensorOptions().dtype(s.dtype).device(s.device);
  if (s.strided_rows) {
    std::vector<int64_t> wide = s.shape;
    wide[1] *= 2;
    const at::Tensor h = at::randn(wide, at::kDouble).to(s.device, s.dtype);
    const auto halves = h.chunk(2, 1);
    in.mu = halves[0];
    in.logvar = halves[1];
  } else {
    in.mu = (at::randn(s.shape, at::kDouble) * 1.5).to(options);
    in.logvar = at::randn(s.shape, at::kDouble).to(options);
  }
  in.eps = at::randn(s.shape, at::kDouble).to(options);
  in.grad_z = at::randn(s.shape, at::kDouble).to(options);
  in.seed = at::full({}, seed_value, at::TensorOptions().dtype(at::kLong).device(s.device));
  if (s.prior != Prior::kNone) {
    in.prior_mu = make_prior(s, 0.3, 1.0);
    in.prior_logvar = make_prior(s, -0.2, 0.8);
  }
  in.rows = s.shape[0];
  in.cols = 1;
  for (size_t d = 1; d < s.shape.size(); ++d) in.cols *= s.shape[d];
  in.grad_kl = at::randn({in.rows}, at::kDouble).to(s.device, kl_dtype(s.dtype));
  const auto shape = in.mu.sizes();
  in.v_mu = values(in.mu, shape);
  in.v_lv = values(in.logvar, shape);
  in.v_eps = values(in.eps, shape);
  in.v_gz = values(in.grad_z, shape);
  in.v_gkl = values(in.grad_kl, {in.rows});
  in.v_pmu = in.prior_mu ? values(*in.prior_mu, shape) : std::vector<LD>(in.v_mu.size(), 0);
  in.v_plv = in.prior_logvar ? values(*in.prior_logvar, shape) : std::vector<LD>(in.v_mu.size(), 0);
  return in;
}

// The sampler's eps for element i: Philox's float normal, as the op's compute type sees it.
std::vector<LD> sampled_eps(int64_t seed, size_t n) {
  const vae_ext::PhiloxKey key = vae_ext::philox_key(seed);
  std::vector<LD> out(n);
  for (size_t i = 0; i < n; ++i) out[i] = vae_ext::normal_at(key, i);
  return out;
}

// Reference values and their tolerances before the rounding to the stored dtype.
struct Expected {
  std::vector<LD> value, tolerance;
};

// eps of the compute type times the ulps an elementwise result may be off (kResultUlps), plus
// one for the rounding of the inputs' differences.
LD elementwise_eps(at::ScalarType dtype) {
  return dtype == at::kDouble ? (kResultUlps<double> + 1) * kEps<double>
                              : (kResultUlps<float> + 1) * kEps<float>;
}

// The tolerance of an elementwise result: elementwise_eps times its error scale.
void expect(Expected& e, at::ScalarType dtype, LD value, LD scale) {
  e.value.push_back(value);
  e.tolerance.push_back(elementwise_eps(dtype) * scale);
}

void check_tensor(const char* what, const Inputs& in, const at::Tensor& got,
                  const Expected& expected, at::ScalarType stored) {
  EXPECT(got.scalar_type() == stored, what, " dtype ", got.scalar_type(), " for ",
         in.setup.describe());
  EXPECT(static_cast<size_t>(got.numel()) == expected.value.size(), what, " numel ", got.numel());
  if (static_cast<size_t>(got.numel()) != expected.value.size()) return;
  const std::vector<LD> v = values(got, got.sizes());
  for (size_t i = 0; i < v.size(); ++i) {
    const LD ref = expected.value[i];
    const LD before_rounding = expected.tolerance[i];
    const LD tolerance =
        before_rounding + storage_rounding(stored, std::fabs(ref) + before_rounding);
    EXPECT(std::fabs(v[i] - ref) <= tolerance, what, "[", i, "] = ", static_cast<double>(v[i]),
           ", expected ", static_cast<double>(ref), " +- ", static_cast<double>(tolerance), " for ",
           in.setup.describe());
  }
}

Expected expected_z(const Inputs& in, const std::vector<LD>& eps) {
  Expected e;
  for (size_t i = 0; i < in.v_mu.size(); ++i) {
    const LD noise = eps[i] * std::exp(0.5L * in.v_lv[i]);
    expect(e, in.setup.dtype, in.v_mu[i] + noise, std::fabs(in.v_mu[i]) + std::fabs(noise));
  }
  return e;
}

// Per-sample KL: the row sums of the elementwise KL, with the summation's rounding error
// (at most cols * u times the sum of the magnitudes, for any summation order).
Expected expected_kl(const Inputs& in) {
  Expected e;
  const LD eps = compute_eps(in.setup.dtype);
  for (int64_t b = 0; b < in.rows; ++b) {
    LD sum = 0, scale = 0, magnitude = 0;
    for (int64_t j = 0; j < in.cols; ++j) {
      const size_t i = b * in.cols + j;
      const LD kl = kl_reference(in.v_mu[i], in.v_lv[i], in.v_pmu[i], in.v_plv[i]);
      sum += kl;
      magnitude += std::fabs(kl);
      scale += kl_error_scale(in.v_mu[i], in.v_lv[i], in.v_pmu[i], in.v_plv[i]);
    }
    e.value.push_back(sum);
    e.tolerance.push_back(elementwise_eps(in.setup.dtype) * scale +
                          static_cast<LD>(in.cols) * (eps / 2) * magnitude);
  }
  return e;
}

void check_forward_ops(const Setup& s) {
  const Inputs in = make_inputs(s, 17);
  const size_t n = in.v_mu.size();
  const Expected z_given = expected_z(in, in.v_eps);
  const Expected z_sampled = expected_z(in, sampled_eps(17, n));
  const Expected kl = expected_kl(in);

  check_tensor("reparameterize z", in, reparameterize(in.mu, in.logvar, in.eps), z_given, s.dtype);
  const at::Tensor z_seed = reparameterize_sampled(in.mu, in.logvar, in.seed);
  check_tensor("reparameterize_sampled z", in, z_seed, z_sampled, s.dtype);
  EXPECT(z_seed.is_contiguous() && z_seed.sizes() == in.mu.sizes(), s.describe());

  const at::Tensor kl_only = gaussian_kl(in.mu, in.logvar, in.prior_mu, in.prior_logvar);
  EXPECT(kl_only.dim() == 1 && kl_only.size(0) == in.rows, kl_only.sizes());
  check_tensor("gaussian_kl", in, kl_only, kl, kl_dtype(s.dtype));

  const auto [z1, kl1] =
      reparameterize_kl(in.mu, in.logvar, in.eps, std::nullopt, in.prior_mu, in.prior_logvar);
  check_tensor("reparameterize_kl(eps) z", in, z1, z_given, s.dtype);
  check_tensor("reparameterize_kl(eps) kl", in, kl1, kl, kl_dtype(s.dtype));
  const auto [z2, kl2] =
      reparameterize_kl(in.mu, in.logvar, std::nullopt, in.seed, in.prior_mu, in.prior_logvar);
  check_tensor("reparameterize_kl(seed) z", in, z2, z_sampled, s.dtype);
  check_tensor("reparameterize_kl(seed) kl", in, kl2, kl, kl_dtype(s.dtype));
  EXPECT(at::equal(z2, z_seed), "the same seed gives the same z for ", s.describe());
}

struct Grads {
  Expected mu, lv, pmu, plv;
};

// Gradients of sum(grad_z * z) + sum(grad_kl * kl) with respect to each input.
Grads expected_grads(const Inputs& in, const std::vector<LD>* eps, bool with_kl) {
  Grads g;
  for (size_t i = 0; i < in.v_mu.size(); ++i) {
    const LD gz = eps != nullptr ? in.v_gz[i] : 0;
    const LD z_lv = eps != nullptr ? gz * 0.5L * (*eps)[i] * std::exp(0.5L * in.v_lv[i]) : 0;
    const LD gk = with_kl ? in.v_gkl[i / in.cols] : 0;
    const LD d = in.v_mu[i] - in.v_pmu[i], dlv = in.v_lv[i] - in.v_plv[i];
    const LD inv_var_p = std::exp(-in.v_plv[i]), em1 = std::expm1(dlv);
    const LD kl_mu = gk * d * inv_var_p, kl_lv = gk * 0.5L * em1;
    const LD kl_plv = -gk * 0.5L * (em1 + d * d * inv_var_p);
    const LD lv_scale = std::fabs(kl_lv) * (1 + std::fabs(dlv));
    const at::ScalarType dtype = in.setup.dtype;
    expect(g.mu, dtype, gz + kl_mu, std::fabs(gz) + std::fabs(kl_mu));
    expect(g.lv, dtype, z_lv + kl_lv, std::fabs(z_lv) + lv_scale);
    expect(g.pmu, dtype, -kl_mu, std::fabs(kl_mu));
    expect(g.plv, dtype, kl_plv, lv_scale + std::fabs(gk * d * d * inv_var_p));
  }
  return g;
}

void check_backward_ops(const Setup& s) {
  const Inputs in = make_inputs(s, 23);
  const std::vector<LD> eps_sampled = sampled_eps(23, in.v_mu.size());
  const Grads given = expected_grads(in, &in.v_eps, true);
  const Grads sampled = expected_grads(in, &eps_sampled, true);
  const Grads kl_only = expected_grads(in, nullptr, true);
  const Grads z_only = expected_grads(in, &in.v_eps, false);
  const bool has_prior = s.prior != Prior::kNone;

  check_tensor("reparameterize_backward(eps)", in,
               reparameterize_backward(in.grad_z, in.logvar, in.eps, std::nullopt), z_only.lv,
               s.dtype);
  const Grads z_only_sampled = expected_grads(in, &eps_sampled, false);
  check_tensor("reparameterize_backward(seed)", in,
               reparameterize_backward(in.grad_z, in.logvar, std::nullopt, in.seed),
               z_only_sampled.lv, s.dtype);

  const auto check_all = [&](const char* what, const FourTensors& got, const Grads& want,
                             bool prior_grads) {
    check_tensor(c10::str(what, " grad_mu").c_str(), in, std::get<0>(got), want.mu, s.dtype);
    check_tensor(c10::str(what, " grad_logvar").c_str(), in, std::get<1>(got), want.lv, s.dtype);
    if (prior_grads) {
      check_tensor(c10::str(what, " grad_prior_mu").c_str(), in, std::get<2>(got), want.pmu,
                   s.dtype);
      check_tensor(c10::str(what, " grad_prior_logvar").c_str(), in, std::get<3>(got), want.plv,
                   s.dtype);
    } else {
      EXPECT(std::get<2>(got).numel() == 0 && std::get<3>(got).numel() == 0, what);
    }
  };
  check_all("backward(eps)",
            reparameterize_kl_backward(in.grad_z, in.grad_kl, in.mu, in.logvar, in.eps,
                                       std::nullopt, in.prior_mu, in.prior_logvar, has_prior),
            given, has_prior);
  check_all("backward(seed)",
            reparameterize_kl_backward(in.grad_z, in.grad_kl, in.mu, in.logvar, std::nullopt,
                                       in.seed, in.prior_mu, in.prior_logvar, has_prior),
            sampled, has_prior);
  check_all("backward(kl only)",
            reparameterize_kl_backward(std::nullopt, in.grad_kl, in.mu, in.logvar, std::nullopt,
                                       std::nullopt, in.prior_mu, in.prior_logvar, has_prior),
            kl_only, has_prior);
  check_all("backward(z only)",
            reparameterize_kl_backward(in.grad_z, std::nullopt, in.mu, in.logvar, in.eps,
                                       std::nullopt, in.prior_mu, in.prior_logvar, has_prior),
            z_only, has_prior);  // the prior gradients are zeros
}

std::vector<Setup> op_setups(c10::Device device) {
  std::vector<Setup> setups;
  for (const at::ScalarType dtype : {at::kDouble, at::kFloat, at::kBFloat16}) {
    setups.push_back({dtype, {5, 37}, false, Prior::kNone, device});
    setups.push_back({dtype, {4, 3, 5, 7}, true, Prior::kFull, device});
  }
  for (const Prior prior :
       {Prior::kScalar, Prior::kPerLatent, Prior::kPerLatentLeadingOne, Prior::kFull}) {
    setups.push_back({at::kFloat, {6, 300}, true, prior, device});  // more than one chunk
    setups.push_back({at::kDouble, {3, 2, 9}, false, prior, device});
  }
  setups.push_back({at::kFloat, {9}, false, Prior::kNone, device});  // no latent dims
  return setups;
}

// Empty batches and zero-size latents (their own group: a kernel crashing on them must not hide
// the other results).
std::vector<Setup> empty_setups(c10::Device device) {
  std::vector<Setup> setups;
  for (const at::ScalarType dtype : {at::kDouble, at::kFloat, at::kBFloat16}) {
    setups.push_back({dtype, {0, 4}, false, Prior::kNone, device});
    setups.push_back({dtype, {3, 0}, false, Prior::kNone, device});
    setups.push_back({dtype, {2, 3, 0}, false, Prior::kFull, device});
  }
  return setups;
}

TEST(ops, forward_matches_the_math) {
  for (const Setup& s : op_setups(at::kCPU)) check_forward_ops(s);
}

TEST(ops, backward_matches_the_math) {
  for (const Setup& s : op_setups(at::kCPU)) check_backward_ops(s);
}

TEST(ops_empty, forward_of_empty_tensors) {
  for (const Setup& s : empty_setups(at::kCPU)) check_forward_ops(s);
}

TEST(ops_empty, backward_of_empty_tensors) {
  for (const Setup& s : empty_setups(at::kCPU)) check_backward_ops(s);
}

// z = 0 + eps * exp(0) = eps: the sampled eps itself, which must be Philox's, bit for bit.
void check_sampled_eps_is_philox(c10::Device device) {
  const int64_t seeds[] = {0, 1, -0x123456789abcdefLL, 0x7fffffffffffffffLL};
  for (const at::ScalarType dtype : {at::kFloat, at::kDouble, at::kBFloat16}) {
    for (const int64_t seed : seeds) {
      const auto options = at::TensorOptions().dtype(dtype).device(device);
      const at::Tensor zeros = at::zeros({7, 1001}, options);
      const at::Tensor seed_t = at::full({1}, seed, at::TensorOptions(at::kLong).device(device));
      const at::Tensor z = reparameterize_sampled(zeros, zeros, seed_t);
      const at::Tensor z_float = z.to(at::kCPU, at::kFloat).contiguous();
      const float* got = z_float.const_data_ptr<float>();
      const vae_ext::PhiloxKey key = vae_ext::philox_key(seed);
      int64_t mismatches = 0, first = -1;
      for (int64_t i = 0; i < z_float.numel(); ++i) {
        const float eps = vae_ext::normal_at(key, static_cast<uint64_t>(i));
        const float want = dtype == at::kBFloat16 ? static_cast<float>(c10::BFloat16(eps)) : eps;
        if (!same_bits(got[i], want)) {
          if (first < 0) first = i;
          ++mismatches;
        }
      }
      EXPECT(mismatches == 0, mismatches, " elements differ from Philox (first at ", first,
             ") for ", dtype, " seed ", seed, " on ", device);
    }
  }
}

TEST(ops, sampled_eps_is_philox_bit_for_bit) { check_sampled_eps_is_philox(at::kCPU); }

TEST(ops, bad_arguments_raise_type_and_value_errors) {
  const at::Tensor mu = at::randn({4, 5}), lv = at::randn({4, 5});
  const at::Tensor seed = at::full({1}, 3, at::kLong);
  EXPECT_THROWS(c10::TypeError, "logvar",
                gaussian_kl(mu, lv.to(at::kDouble), std::nullopt, std::nullopt));
  EXPECT_THROWS(c10::TypeError, "mu",
                gaussian_kl(mu.to(at::kInt), lv.to(at::kInt), std::nullopt, std::nullopt));
  EXPECT_THROWS(c10::ValueError, "logvar",
                gaussian_kl(mu, at::randn({4, 6}), std::nullopt, std::nullopt));
  EXPECT_THROWS(c10::ValueError, "prior_mu", gaussian_kl(mu, lv, at::randn({3, 5}), std::nullopt));
  EXPECT_THROWS(c10::TypeError, "seed", reparameterize_sampled(mu, lv, seed.to(at::kInt)));
  EXPECT_THROWS(c10::ValueError, "seed", reparameterize_sampled(mu, lv, at::zeros({2}, at::kLong)));
  EXPECT_THROWS(c10::ValueError, "reparameterize_kl: pass exactly one of eps and seed",
                reparameterize_kl(mu, lv, std::nullopt, std::nullopt, std::nullopt, std::nullopt));
  EXPECT_THROWS(c10::ValueError, "reparameterize_backward: pass exactly one",
                reparameterize_backward(mu, lv, std::nullopt, std::nullopt));
  EXPECT_THROWS(c10::ValueError, "reparameterize_kl_backward: pass exactly one",
                reparameterize_kl_backward(mu, std::nullopt, mu, lv, std::nullopt, std::nullopt,
                                           std::nullopt, std::nullopt, false));
  EXPECT_THROWS(c10::ValueError, "grad_kl",
                reparameterize_kl_backward(std::nullopt, at::ones({3}), mu, lv, std::nullopt,
                                           std::nullopt, std::nullopt, std::nullopt, false));
}

// eps and seed together are ambiguous (either could rebuild z): every op taking both rejects
// them, naming itself, whether or not it would have used them.
TEST(ops, eps_and_seed_together_are_rejected) {
  const at::Tensor mu = at::randn({4, 5}), lv = at::randn({4, 5}), eps = at::randn({4, 5});
  const at::Tensor seed = at::full({1}, 3, at::kLong), gk = at::ones({4});
  const char* const both = ": eps and seed are both given";
  EXPECT_THROWS(c10::ValueError, std::string("reparameterize_kl") + both,
                reparameterize_kl(mu, lv, eps, seed, std::nullopt, std::nullopt));
  EXPECT_THROWS(c10::ValueError, std::string("reparameterize_backward") + both,
                reparameterize_backward(mu, lv, eps, seed));
  EXPECT_THROWS(
      c10::ValueError, std::string("reparameterize_kl_backward") + both,
      reparameterize_kl_backward(mu, gk, mu, lv, eps, seed, std::nullopt, std::nullopt, false));
  EXPECT_THROWS(c10::ValueError, std::string("reparameterize_kl_backward") + both,
                reparameterize_kl_backward(std::nullopt, gk, mu, lv, eps, seed, std::nullopt,
                                           std::nullopt, true));
}

// --------------------------------------------------------------------------- autograd

void require_cpp_autograd() {
  const auto handle = c10::Dispatcher::singleton().findOp({"vae_ext::reparameterize_kl", ""});
  if (!handle || !handle->hasKernelForDispatchKey(c10::DispatchKey::Autograd)) {
    throw Skipped{"the library has no C++ autograd kernels"};
  }
}

at::Tensor leaf(const at::Tensor& t) { return t.detach().clone().requires_grad_(true); }

// Backpropagates sum(grad_z * z) + sum(grad_kl * kl) through the forward op and compares the
// inputs' gradients with the math.
void check_autograd(const Setup& s, bool sampled) {
  const Inputs in = make_inputs(s, 31);
  const at::Tensor mu = leaf(in.mu), logvar = leaf(in.logvar);
  const at::Tensor prior_mu = leaf(*in.prior_mu), prior_logvar = leaf(*in.prior_logvar);
  const OptTensor eps = sampled ? OptTensor() : OptTensor(in.eps);
  const OptTensor seed = sampled ? OptTensor(in.seed) : OptTensor();
  const auto [z, kl] = reparameterize_kl(mu, logvar, eps, seed, prior_mu, prior_logvar);
  ((z * in.grad_z).sum() + (kl * in.grad_kl).sum()).backward();
  const std::vector<LD> eps_values = sampled ? sampled_eps(31, in.v_mu.size()) : in.v_eps;
  const Grads want = expected_grads(in, &eps_values, true);
  const char* how = sampled ? "autograd(seed)" : "autograd(eps)";
  for (const auto& [name, tensor, expected] :
       {std::make_tuple("mu", mu, want.mu), std::make_tuple("logvar", logvar, want.lv),
        std::make_tuple("prior_mu", prior_mu, want.pmu),
        std::make_tuple("prior_logvar", prior_logvar, want.plv)}) {
    EXPECT(tensor.grad().defined(), how, ": no gradient for ", name);
    if (tensor.grad().defined()) {
      check_tensor(c10::str(how, " d/d", name).c_str(), in, tensor.grad(), expected, s.dtype);
    }
  }
}

TEST(autograd, reparameterize_kl_backpropagates_to_every_input) {
  require_cpp_autograd();
  for (const at::ScalarType dtype : {at::kDouble, at::kFloat}) {
    const Setup s{dtype, {4, 3, 5}, false, Prior::kFull, at::kCPU};
    check_autograd(s, true);
    check_autograd(s, false);
  }
}

// --------------------------------------------------------------------------- cuda

void require_cuda_kernels() {
  if (!at::hasCUDA()) throw Skipped{"no CUDA device (or torch without CUDA)"};
  const auto handle = c10::Dispatcher::singleton().findOp({"vae_ext::gaussian_kl", ""});
  if (!handle || !handle->hasKernelForDispatchKey(c10::DispatchKey::CUDA)) {
    throw Skipped{"libvae_ext was built without its CUDA kernels (VAE_EXT_WITH_CUDA=OFF)"};
  }
}

TEST(cuda, forward_matches_the_math) {
  require_cuda_kernels();
  for (const Setup& s : op_setups(at::kCUDA)) check_forward_ops(s);
}

TEST(cuda, backward_matches_the_math) {
  require_cuda_kernels();
  for (const Setup& s : op_setups(at::kCUDA)) check_backward_ops(s);
}

TEST(cuda, empty_tensors) {
  require_cuda_kernels();
  for (const Setup& s : empty_setups(at::kCUDA)) {
    check_forward_ops(s);
    check_backward_ops(s);
  }
}

TEST(cuda, sampled_eps_is_philox_bit_for_bit) {
  require_cuda_kernels();
  check_sampled_eps_is_philox(at::kCUDA);
}

}  // namespace

int main(int argc, char** argv) {
  const std::string arg = argc > 1 ? argv[1] : "";
  if (arg == "--list-groups") {
    std::vector<std::string> groups;
    for (const TestCase& t : registry()) {
      if (std::find(groups.begin(), groups.end(), t.group) == groups.end()) {
        groups.push_back(t.group);
      }
    }
    for (const std::string& g : groups) std::cout << g << "\n";
    return 0;
  }
  return run_tests(arg);
}
