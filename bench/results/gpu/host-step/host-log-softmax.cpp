// What the engine's host log-softmax (engine.cpp, log_softmax) costs per
// session row of a 32,000-token vocabulary, before ForwardSequence::logprobs
// moved it to the device for the GPU backend. Run on the 2-core CI machine:
//   g++ -O2 -o /tmp/lsm host-log-softmax.cpp && /tmp/lsm
// 236 rows: 45.8-52.4 ms (194-222 us per row).
#include <chrono>
#include <cmath>
#include <cstdio>
#include <vector>
#include <random>
#include <algorithm>
void log_softmax(const float* logits, long n, float* out) {
  float m = -INFINITY;
  for (long i = 0; i < n; ++i) m = std::max(m, logits[i]);
  double sum = 0;
  for (long i = 0; i < n; ++i) sum += std::exp(double(logits[i]) - m);
  const double lse = m + std::log(sum);
  for (long i = 0; i < n; ++i) out[i] = float(double(logits[i]) - lse);
}
int main() {
  const long V = 32000, S = 236;
  std::vector<float> x(V * S), y(V * S);
  std::mt19937 g(1); std::normal_distribution<float> d;
  for (auto& v : x) v = d(g);
  for (int rep = 0; rep < 3; ++rep) {
    auto t0 = std::chrono::steady_clock::now();
    for (long s = 0; s < S; ++s) log_softmax(&x[s * V], V, &y[s * V]);
    double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    std::printf("236 rows: %.2f ms (%.1f us per row)\n", ms, ms * 1000 / S);
  }
}
