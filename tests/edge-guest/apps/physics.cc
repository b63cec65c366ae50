// SPDX-License-Identifier: GPL-2.0-or-later
//
// physics-service: the `physics` edge guest application, a compute-bound
// simulation that keeps running while the VM moves. Particles fall under
// gravity onto a terrain and repel each other (soft discs, found through a
// cell grid), integrated with velocity Verlet at up to --hz steps a second.
// The hot state (particles, grid) is rewritten at every step; the terrain is
// a large read-mostly table made at start-up. A TCP request line (any text)
// on port --port (every address) is answered with one line of JSON: step,
// particle count, total energy and the last step's time.
//
// Built static on the host (the guest needs nothing installed for it).

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace {

struct Options {
  int particles = 32768;
  int terrain_mib = 48;
  double hz = 20;
  int port = 8003;
};

struct Particle {
  double x, y, vx, vy;
};

// Height of the ground along x, sampled finely: smooth hills plus detail.
class Terrain {
 public:
  Terrain(size_t bytes, double width) : width_(width) {
    samples_.resize(bytes / sizeof(double));
    const size_t n = samples_.size();
    for (size_t i = 0; i < n; i++) {
      const double u = double(i) / n * 2 * M_PI;
      samples_[i] = 0.08 + 0.05 * std::sin(3 * u) + 0.02 * std::sin(17 * u + 1) +
                    0.005 * std::sin(211 * u + 2);
    }
  }
  double Height(double x) const {
    const double u = std::clamp(x / width_, 0.0, 1.0);
    return samples_[size_t(u * (samples_.size() - 1))];
  }

 private:
  std::vector<double> samples_;
  double width_;
};

class World {
 public:
  World(const Options& o)
      : terrain_(size_t(o.terrain_mib) << 20, 1.0), p_(o.particles) {
    // Radius such that the discs cover about a fifth of the box.
    radius_ = std::sqrt(0.2 / (M_PI * o.particles));
    cells_ = std::max(1, int(1.0 / (2 * radius_)));
    uint64_t s = 0x243f6a8885a308d3ULL;
    auto rnd = [&s] {
      s ^= s << 13, s ^= s >> 7, s ^= s << 17;
      return double(s >> 11) / double(1ULL << 53);
    };
    for (auto& q : p_) q = {rnd(), 0.3 + 0.7 * rnd(), rnd() - 0.5, 0};
    head_.resize(size_t(cells_) * cells_);
    next_.resize(p_.size());
  }

  void Step(double dt) {
    std::fill(head_.begin(), head_.end(), -1);
    for (int i = 0; i < int(p_.size()); i++) {
      const int c = Cell(p_[i].x, p_[i].y);
      next_[i] = head_[c];
      head_[c] = i;
    }
    const double k = 2000, r2 = 4 * radius_ * radius_;
    for (int i = 0; i < int(p_.size()); i++) {
      Particle& a = p_[i];
      double fx = 0, fy = -9.81;
      const int cx = Coord(a.x), cy = Coord(a.y);
      for (int dy = -1; dy <= 1; dy++) {
        for (int dx = -1; dx <= 1; dx++) {
          const int x = cx + dx, y = cy + dy;
          if (x < 0 || y < 0 || x >= cells_ || y >= cells_) continue;
          for (int j = head_[size_t(y) * cells_ + x]; j >= 0; j = next_[j]) {
            if (j == i) continue;
            const double ex = a.x - p_[j].x, ey = a.y - p_[j].y;
            const double d2 = ex * ex + ey * ey;
            if (d2 >= r2 || d2 == 0) continue;
            const double d = std::sqrt(d2), push = k * (2 * radius_ - d) / d;
            fx += push * ex, fy += push * ey;
          }
        }
      }
      a.vx = (a.vx + fx * dt) * 0.999;
      a.vy = (a.vy + fy * dt) * 0.999;
      a.x += a.vx * dt, a.y += a.vy * dt;
      const double ground = terrain_.Height(a.x);
      if (a.y < ground) a.y = ground, a.vy = std::fabs(a.vy) * 0.5;
      if (a.y > 1) a.y = 1, a.vy = -std::fabs(a.vy);
      if (a.x < 0) a.x = 0, a.vx = std::fabs(a.vx);
      if (a.x > 1) a.x = 1, a.vx = -std::fabs(a.vx);
    }
  }

  double Energy() const {
    double e = 0;
    for (const auto& a : p_) e += 0.5 * (a.vx * a.vx + a.vy * a.vy) + 9.81 * a.y;
    return e;
  }
  size_t size() const { return p_.size(); }

 private:
  int Coord(double v) const { return std::clamp(int(v * cells_), 0, cells_ - 1); }
  int Cell(double x, double y) const { return Coord(y) * cells_ + Coord(x); }

  Terrain terrain_;
  std::vector<Particle> p_;
  double radius_;
  int cells_;
  std::vector<int> head_, next_;
};

std::mutex mu;
uint64_t steps = 0;
double energy = 0, step_ms = 0;

void Serve(int port, size_t particles) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  const int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  // Every address: a synthesis forwards this port to the VM's NIC (the
  // VM's user-mode network is restricted, so nothing else reaches it).
  addr.sin_addr.s_addr = htonl(INADDR_ANY);
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) < 0 ||
      listen(fd, 8) < 0) {
    std::perror("physics-service: listen");
    std::exit(1);
  }
  for (;;) {
    const int c = accept(fd, nullptr, nullptr);
    if (c < 0) continue;
    char buf[256];
    std::string line;
    ssize_t n;
    while ((n = read(c, buf, sizeof(buf))) > 0) {
      line.append(buf, size_t(n));
      if (line.find('\n') != std::string::npos) break;
    }
    char reply[256];
    {
      std::lock_guard<std::mutex> lock(mu);
      std::snprintf(reply, sizeof(reply),
                    "{\"step\": %llu, \"particles\": %zu, \"energy\": %.6f, "
                    "\"ms_per_step\": %.1f}\n",
                    static_cast<unsigned long long>(steps), particles, energy,
                    step_ms);
    }
    (void)!write(c, reply, std::strlen(reply));
    close(c);
  }
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--particles") o.particles = std::atoi(argv[i + 1]);
    else if (flag == "--terrain-mib") o.terrain_mib = std::atoi(argv[i + 1]);
    else if (flag == "--hz") o.hz = std::atof(argv[i + 1]);
    else if (flag == "--port") o.port = std::atoi(argv[i + 1]);
    else {
      std::fprintf(stderr, "usage: physics-service [--particles N] "
                           "[--terrain-mib M] [--hz F] [--port P]\n");
      return 2;
    }
  }
  World world(o);
  std::thread(Serve, o.port, world.size()).detach();
  const auto period = std::chrono::duration<double>(1.0 / o.hz);
  for (;;) {
    const auto start = std::chrono::steady_clock::now();
    world.Step(1e-3);
    const double e = world.Energy();
    const auto took = std::chrono::steady_clock::now() - start;
    {
      std::lock_guard<std::mutex> lock(mu);
      steps++;
      energy = e;
      step_ms = std::chrono::duration<double, std::milli>(took).count();
    }
    if (took < period) std::this_thread::sleep_for(period - took);
  }
}
