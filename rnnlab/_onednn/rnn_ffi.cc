// rnnlab's plain LSTM (rnnlab/cells.py "lstm", no peepholes) and GRU ("gru") as oneDNN's
// fused LSTM and linear-before-reset GRU primitives, called from JAX through XLA FFI custom
// calls on the CPU. rnnlab/onednn.py
// compiles this file with g++ on first use (against jaxlib's FFI headers and the
// onednn-cpu-gomp / onednn-devel-cpu-gomp wheels, oneDNN v3.2), loads it with ctypes and
// registers the targets; engine.scan(onednn=True) runs it. One layer, one direction
// (left-to-right, or right-to-left for scan(reverse=True)), full-length sequences, float32.
//
// Layouts (rnnlab's, so no copies or transposes on the JAX side), G weight gate blocks:
//   xs (B, T, D)          -> oneDNN src_layer, logical (T, N, C), format ntc
//   ys (B, T, H)          -> dst_layer, ntc
//   c0, h0, cT, hT (B, H) -> src_iter(_c) / dst_iter(_c), logical (1, 1, N, H), ldnc
//   w_x (D, G*H)          -> weights_layer, logical (1, 1, D, G, H), ldigo (the same bytes)
//   w_h (H, G*H)          -> weights_iter,  logical (1, 1, H, G, H), ldigo
//   b (K*H,)              -> bias, logical (1, 1, K, H), ldgo: K bias blocks
// The lstm: G = 4, gate order (i, f, g, o), oneDNN's vanilla_lstm order. The gru: G = 3 in
// oneDNN's order (u, r, o) (dnnl.hpp, format_tag::ldigo: "update, reset and output gate"),
// rnnlab's (z, r, n), and b = (b_u, b_r, b_o, b_o') with b_o' the bias inside r * (h W_ho + b_o')
// (dnnl.hpp, algorithm::lbr_gru); rnnlab/onednn.py swaps rnnlab's (r, z) blocks and appends
// b_hn. oneDNN's h_t = u * h_{t-1} + (1 - u) * o is rnnlab's (1 - z) * n + z * h_{t-1}.
// The rnn and the irnn: oneDNN's vanilla RNN, G = K = 1, with tanh (rnn) or relu of negative
// slope 0 (irnn), rnnlab's h_t = act(x_t W_x + h_{t-1} W_h + b).
//
// Targets (attribute reverse: 0 left-to-right, 1 right-to-left); carries in rnnlab's order:
//   onednn_lstm_fwd(xs, c0, h0, w_x, w_h, b) -> (ys, cT, hT, token u32[2])
//   onednn_lstm_infer(xs, c0, h0, w_x, w_h, b) -> (ys, cT, hT)   (no workspace: nothing
//       differentiates the call)
//   onednn_lstm_bwd(xs, c0, h0, w_x, w_h, b, ys, cT, hT, token, dys, dcT, dhT)
//       -> (dxs, dc0, dh0, dw_x, dw_h, db)
//   onednn_gru_fwd, onednn_gru_infer, onednn_gru_bwd: the same without c0, cT and their
//       gradients.
// and the C functions onednn_rnn_pool(cell, T, N, C, H, reverse, out) (a problem's workspace
// pool: slots, busy slots, bytes per slot) and onednn_rnn_info(cell, ...) (debugging: the
// implementation and weight formats oneDNN picked), cell one of "lstm", "gru", "rnn", "irnn".
//
// Primitive descriptors, primitives, weight reorders, reordered weight buffers and a
// scratchpad are cached per cell and (T, N, C, H, reverse) and never evicted, each entry
// with its own mutex.
//
// Workspaces: oneDNN's forward-training workspace (what backward reads; several times the size
// of ys) lives in this library's Pool, not in XLA: forward returns a token naming its slot, and
// backward reads the slot and frees it for the next forward. Had it been an XLA output, XLA
// would allocate it anew at every step, and glibc serves such large requests with fresh
// mmaps: every step faulted in every page again (about a third of the LSTM's training step at
// B=16, T=500, H=64; benchmarks/README.md). A token carries the slot's generation, bumped
// whenever a forward takes the slot; a backward whose slot has since been taken (XLA merged
// two equal forwards, a forward whose backward never ran was evicted, or an old vjp is
// called again) recomputes the workspace from its inputs, so results never depend on the pool.
//
// Threads: oneDNN (the wheel's OpenMP runtime) runs each problem on OpenMP threads set by
// onednn_rnn_set_threads(fixed, cores), once, by rnnlab/onednn.py before the first call: a fixed
// count (RNNLAB_ONEDNN_THREADS), or with fixed = 0 (unset or auto, the default) one thread per
// kMacsPerThread multiply-adds of the step's recurrent matmul (N x H times H x G*H), at least 1
// and at most `cores` (onednn.max_threads()).
// Every call, and every primitive creation (which sizes the scratchpad by the thread count),
// runs on ONE thread of this library (OneThread), which the XLA thread of the call waits for.
// Had each XLA worker thread called oneDNN itself, each would lead its own OpenMP team: with
// n = 2 the process held several teams on two cores, libgomp saw more threads than cores and
// put idle team threads to sleep after a few microseconds, and every step of the recurrence
// paid a futex wake-up (the quickstart took 2.6x as long on 2 threads as on 1).
// One team stays within the cores, so its threads spin between steps instead.

#include <omp.h>

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <unordered_map>
#include <vector>

#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
using dnnl::memory;
using tag = dnnl::memory::format_tag;
using dt = dnnl::memory::data_type;

namespace {

std::atomic<int> g_fixed_threads{1};  // 0: per problem, ThreadsFor
std::atomic<int> g_cores{1};

// Measured on 2 cores (benchmarks/README.md, "Two oneDNN threads"): the step's recurrent
// matmul needs about this much work per thread for a second thread to pay. Two threads
// trained the LSTM at 0.82x and 0.99x of one at B=16 and 32, H=64 (262k, 524k), the GRU at
// 0.57x and 0.66x (197k, 393k).
constexpr int64_t kMacsPerThread = 384 * 1024;

// The one thread that runs everything oneDNN does here (see Threads above), started on first
// use. Run(fn) queues fn, waits for it
// and returns; fn must not throw (callers catch inside). A process forked after the thread
// started (the child has no such thread) starts its own.
class OneThread {
 public:
  static void Run(const std::function<void()>& fn) {
    OneThread* one = Get();
    if (std::this_thread::get_id() == one->id_) return fn();  // already on it
    Job job{&fn};
    {
      std::lock_guard<std::mutex> lock(one->mu_);
      one->queue_.push_back(&job);
    }
    one->wake_.notify_one();
    std::unique_lock<std::mutex> lock(one->mu_);
    job.done_cv.wait(lock, [&] { return job.done; });
  }

 private:
  struct Job {
    const std::function<void()>* fn;
    bool done = false;
    std::condition_variable done_cv;
  };

  static OneThread* Get() {
    static std::mutex mu;
    static OneThread* one = nullptr;
    std::lock_guard<std::mutex> lock(mu);
    if (one == nullptr || one->pid_ != getpid()) one = new OneThread();  // never freed: lives
    return one;                                                         // as long as the process
  }

  OneThread() : pid_(getpid()) {
    std::thread t([this] { Loop(); });
    id_ = t.get_id();
    t.detach();
  }

  void Loop() {
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
      wake_.wait(lock, [&] { return !queue_.empty(); });
      Job* job = queue_.front();
      queue_.erase(queue_.begin());
      lock.unlock();
      (*job->fn)();
      lock.lock();
      job->done = true;
      job->done_cv.notify_one();
    }
  }

  const pid_t pid_;
  std::thread::id id_;
  std::mutex mu_;
  std::condition_variable wake_;
  std::vector<Job*> queue_;
};

dnnl::engine& Engine() {
  static dnnl::engine eng(dnnl::engine::kind::cpu, 0);
  return eng;
}

dnnl::stream& Stream() {
  static dnnl::stream s(Engine());
  return s;
}

// Every primitive uses a user-managed scratchpad. With oneDNN's default (library-managed)
// scratchpad and DNNL_ENABLE_CONCURRENT_EXEC=OFF (how the wheels are built), the scratchpad is a
// thread-local buffer of the thread that CREATED the primitive: creating a primitive on
// Python's thread (trace time) and executing it on an XLA worker thread crashed
// (NULL scratchpad in copy_bias_to_ws).
dnnl::primitive_attr UserScratchpad() {
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  return attr;
}

// A grow-only scratchpad buffer, shared by the primitives of one Entry (they run under its mutex).
struct Scratch {
  memory mem;
  size_t size = 0;
  void Reserve(const memory::desc& md) {
    if (md.get_size() > size) {
      size = md.get_size();
      mem = memory(md, Engine());
    }
  }
  memory For(const memory::desc& md) {
    return memory(md, Engine(), size ? mem.get_data_handle() : nullptr);
  }
};

// The workspaces of one Entry (see Workspaces above); used under the Entry's mutex.
struct Pool {
  // A forward whose backward never ran keeps its slot busy; past this many busy slots a forward
  // takes the least recently used busy one instead of growing the pool (its backward, should it
  // come, recomputes).
  static constexpr size_t kMaxBusy = 16;
  struct Free {
    void operator()(uint8_t* p) const { std::free(p); }
  };
  struct Slot {
    std::unique_ptr<uint8_t, Free> mem;
    uint32_t gen = 0;
    uint64_t used = 0;  // the clock when last taken
    bool busy = false;
  };
  std::vector<Slot> slots;
  size_t bytes = 0;  // every slot's size: the entry's workspace
  uint64_t clock = 0;

  // The slot a forward writes into: a free one, else a new one, else (kMaxBusy busy) the least
  // recently used. Its generation moves on, so earlier tokens of it no longer match.
  size_t Take() {
    size_t pick = slots.size(), busy = 0;
    for (size_t i = 0; i < slots.size(); ++i) {
      if (!slots[i].busy) {
        pick = i;
        break;
      }
      ++busy;
    }
    if (pick == slots.size()) {
      if (busy >= kMaxBusy) {
        pick = 0;
        for (size_t i = 1; i < slots.size(); ++i)
          if (slots[i].used < slots[pick].used) pick = i;
      } else {
        // 64-byte aligned, as oneDNN prefers; aligned_alloc wants a multiple of the alignment
        void* mem = std::aligned_alloc(64, (std::max<size_t>(bytes, 1) + 63) / 64 * 64);
        if (mem == nullptr) throw std::bad_alloc();
        slots.emplace_back();
        slots.back().mem.reset(static_cast<uint8_t*>(mem));
      }
    }
    Slot& s = slots[pick];
    ++s.gen;
    s.used = ++clock;
    s.busy = true;
    return pick;
  }
  // The slot of token (slot index, generation) if it still holds that forward's workspace,
  // else nullptr.
  Slot* Find(const uint32_t* token) {
    if (token[0] >= slots.size() || slots[token[0]].gen != token[1]) return nullptr;
    return &slots[token[0]];
  }
  int64_t Busy() const {
    int64_t n = 0;
    for (const Slot& s : slots) n += s.busy;
    return n;
  }
};

// One problem: T steps of N sequences, C input features, H hidden units, a direction.
struct Problem {
  int64_t T, N, C, H;
  bool reverse;
  auto Key() const { return std::make_tuple(T, N, C, H, reverse); }
};

// The user's memory descriptors (the layouts above) for G weight gate blocks, and the weights
// in `any` format, for the primitive to choose.
struct Descs {
  memory::desc src_layer, iter, wl_user, wi_user, wl_any, wi_any, bias, dst_layer;
  Descs(const Problem& p, int64_t G, int64_t K)
      : src_layer({p.T, p.N, p.C}, dt::f32, tag::ntc),
        iter({1, 1, p.N, p.H}, dt::f32, tag::ldnc),
        wl_user({1, 1, p.C, G, p.H}, dt::f32, tag::ldigo),
        wi_user({1, 1, p.H, G, p.H}, dt::f32, tag::ldigo),
        wl_any({1, 1, p.C, G, p.H}, dt::f32, tag::any),
        wi_any({1, 1, p.H, G, p.H}, dt::f32, tag::any),
        bias({1, 1, K, p.H}, dt::f32, tag::ldgo),
        dst_layer({p.T, p.N, p.H}, dt::f32, tag::ntc) {}
};

// The cells: oneDNN's primitives for each and the shape of its weights. Forward builds the
// forward primitive descriptor (training or inference) with weights in `any` format;
// Backward the backward one, diff weights as `dwl` / `dwi` asks.
struct Lstm {
  static constexpr const char* kName = "lstm";
  static constexpr int64_t kGates = 4;  // (i, f, g, o) in w_x and w_h
  static constexpr int64_t kBiasBlocks = 4;
  static constexpr bool kCellState = true;
  using Fwd = dnnl::lstm_forward;
  using Bwd = dnnl::lstm_backward;
  static Fwd::primitive_desc Forward(dnnl::prop_kind prop, dnnl::rnn_direction dir,
                                     const Descs& d) {
    return Fwd::primitive_desc(Engine(), prop, dir, d.src_layer, d.iter, d.iter, d.wl_any,
                               d.wi_any, d.bias, d.dst_layer, d.iter, d.iter, UserScratchpad());
  }
  static Bwd::primitive_desc Backward(dnnl::rnn_direction dir, const Descs& d,
                                      const memory::desc& dwl, const memory::desc& dwi,
                                      const Fwd::primitive_desc& hint, bool allow_empty) {
    return Bwd::primitive_desc(
        Engine(), dnnl::prop_kind::backward, dir, d.src_layer, d.iter, d.iter, d.wl_any,
        d.wi_any, d.bias, d.dst_layer, d.iter, d.iter, d.src_layer, d.iter, d.iter, dwl, dwi,
        d.bias, d.dst_layer, d.iter, d.iter, hint, UserScratchpad(), allow_empty);
  }
};

struct LbrGru {
  static constexpr const char* kName = "gru";
  static constexpr int64_t kGates = 3;  // (u, r, o) in w_x and w_h; b has a 4th block, b_o'
  static constexpr int64_t kBiasBlocks = 4;
  static constexpr bool kCellState = false;
  using Fwd = dnnl::lbr_gru_forward;
  using Bwd = dnnl::lbr_gru_backward;
  static Fwd::primitive_desc Forward(dnnl::prop_kind prop, dnnl::rnn_direction dir,
                                     const Descs& d) {
    return Fwd::primitive_desc(Engine(), prop, dir, d.src_layer, d.iter, d.wl_any, d.wi_any,
                               d.bias, d.dst_layer, d.iter, UserScratchpad());
  }
  static Bwd::primitive_desc Backward(dnnl::rnn_direction dir, const Descs& d,
                                      const memory::desc& dwl, const memory::desc& dwi,
                                      const Fwd::primitive_desc& hint, bool allow_empty) {
    return Bwd::primitive_desc(
        Engine(), dnnl::prop_kind::backward, dir, d.src_layer, d.iter, d.wl_any, d.wi_any,
        d.bias, d.dst_layer, d.iter, d.src_layer, d.iter, dwl, dwi, d.bias, d.dst_layer,
        d.iter, hint, UserScratchpad(), allow_empty);
  }
};

// The rnn (tanh) and the irnn (relu): oneDNN's vanilla RNN, one gate block.
template <bool kRelu>
struct Vanilla {
  static constexpr const char* kName = kRelu ? "irnn" : "rnn";
  static constexpr int64_t kGates = 1;
  static constexpr int64_t kBiasBlocks = 1;
  static constexpr bool kCellState = false;
  static constexpr dnnl::algorithm kActivation =
      kRelu ? dnnl::algorithm::eltwise_relu : dnnl::algorithm::eltwise_tanh;
  using Fwd = dnnl::vanilla_rnn_forward;
  using Bwd = dnnl::vanilla_rnn_backward;
  static Fwd::primitive_desc Forward(dnnl::prop_kind prop, dnnl::rnn_direction dir,
                                     const Descs& d) {  // alpha = 0: relu's negative slope
    return Fwd::primitive_desc(Engine(), prop, kActivation, dir, d.src_layer, d.iter, d.wl_any,
                               d.wi_any, d.bias, d.dst_layer, d.iter, UserScratchpad());
  }
  static Bwd::primitive_desc Backward(dnnl::rnn_direction dir, const Descs& d,
                                      const memory::desc& dwl, const memory::desc& dwi,
                                      const Fwd::primitive_desc& hint, bool allow_empty) {
    return Bwd::primitive_desc(
        Engine(), dnnl::prop_kind::backward, kActivation, dir, d.src_layer, d.iter, d.wl_any,
        d.wi_any, d.bias, d.dst_layer, d.iter, d.src_layer, d.iter, dwl, dwi, d.bias,
        d.dst_layer, d.iter, hint, UserScratchpad(), allow_empty);
  }
};

// Reorders user weights (ldigo) into the format a primitive wants, into a cached buffer.
struct WeightSlot {
  memory::desc want;
  bool needs_reorder = false;
  memory buf;  // owned by oneDNN when needs_reorder
  dnnl::reorder::primitive_desc pd;
  dnnl::reorder reorder;

  void Init(const memory::desc& user, const memory::desc& wanted, Scratch& scratch) {
    want = wanted;
    needs_reorder = (wanted != user);
    if (needs_reorder) {
      buf = memory(wanted, Engine());
      pd = dnnl::reorder::primitive_desc(Engine(), user, Engine(), wanted, UserScratchpad());
      reorder = dnnl::reorder(pd);
      scratch.Reserve(pd.scratchpad_desc());
    }
  }
  // Returns the memory to pass to the primitive.
  memory Get(const memory::desc& user, void* ptr, Scratch& scratch) {
    memory u(user, Engine(), ptr);
    if (!needs_reorder) return u;
    Run(u, buf, scratch);
    return buf;
  }
  void Run(const memory& from, const memory& to, Scratch& scratch) {
    reorder.execute(Stream(), {{DNNL_ARG_FROM, from}, {DNNL_ARG_TO, to},
                               {DNNL_ARG_SCRATCHPAD, scratch.For(pd.scratchpad_desc())}});
  }
};

// A weight gradient: written straight into the output where the backward primitive takes the
// user's ldigo, else into a buffer of its format that is reordered into the output after.
struct DiffWeights {
  bool plain = true;
  memory::desc want;
  memory buf;
  WeightSlot back;
  void Init(const memory::desc& user, const memory::desc& wanted, Scratch& scratch) {
    want = wanted;
    plain = (wanted == user);
    if (!plain) {
      buf = memory(wanted, Engine());
      back.Init(wanted, user, scratch);
    }
  }
  // The memory the primitive writes, zeroed: oneDNN's RNN backward accumulates into it.
  memory Target(const memory& out) {
    memory m = plain ? out : buf;
    std::memset(m.get_data_handle(), 0, want.get_size());
    return m;
  }
  void Finish(const memory& out, Scratch& scratch) {
    if (!plain) back.Run(buf, out, scratch);
  }
};

// One primitive of an Entry (forward training, forward inference or backward) with the
// reorders of the weights it reads.
struct Stage {
  bool ready = false;
  dnnl::rnn_primitive_desc_base pd;
  dnnl::primitive prim;
  WeightSlot wl, wi;
  void Init(const dnnl::rnn_primitive_desc_base& desc, const Descs& d, Scratch& scratch) {
    pd = desc;
    prim = dnnl::primitive(desc);
    scratch.Reserve(desc.scratchpad_desc());
    wl.Init(d.wl_user, desc.weights_layer_desc(), scratch);
    wi.Init(d.wi_user, desc.weights_iter_desc(), scratch);
    ready = true;
  }
};

template <class K>
struct Entry {
  std::mutex mu;
  Descs d;
  dnnl::rnn_direction dir;
  Scratch scratch;
  typename K::Fwd::primitive_desc fwd_pd;  // the backward primitive's hint
  Stage fwd, inf, bwd;  // inf: forward_inference, no workspace, for calls nothing differentiates
  DiffWeights dwl, dwi;
  Pool pool;  // fwd's workspaces, for bwd

  explicit Entry(const Problem& p)
      : d(p, K::kGates, K::kBiasBlocks),
        dir(p.reverse ? dnnl::rnn_direction::unidirectional_right2left
                      : dnnl::rnn_direction::unidirectional_left2right) {
    fwd_pd = K::Forward(dnnl::prop_kind::forward_training, dir, d);
    fwd.Init(fwd_pd, d, scratch);
    pool.bytes = fwd_pd.workspace_desc().get_size();
  }

  Stage& Inference() {
    if (!inf.ready) inf.Init(K::Forward(dnnl::prop_kind::forward_inference, dir, d), d, scratch);
    return inf;
  }

  Stage& Backward() {
    if (bwd.ready) return bwd;
    // Diff weights: ask for the user's plain ldigo first; fall back to `any` + reorder.
    auto pd = K::Backward(dir, d, d.wl_user, d.wi_user, fwd_pd, true);
    if (!pd) pd = K::Backward(dir, d, d.wl_any, d.wi_any, fwd_pd, false);
    dwl.Init(d.wl_user, pd.diff_weights_layer_desc(), scratch);
    dwi.Init(d.wi_user, pd.diff_weights_iter_desc(), scratch);
    bwd.Init(pd, d, scratch);
    return bwd;
  }
};

// The OpenMP threads for problem `p` of a cell with G gate blocks (see Threads above).
int ThreadsFor(const Problem& p, int64_t G) {
  if (int fixed = g_fixed_threads.load(); fixed > 0) return fixed;
  int64_t by_work = p.N * p.H * G * p.H / kMacsPerThread;
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(by_work, g_cores.load())));
}

// The cached entry of problem `p`, with this thread's OpenMP thread count set for it: what
// oneDNN creates (the scratchpad is sized by the count) and runs next uses the same count.
template <class K>
Entry<K>* GetEntry(const Problem& p) {
  omp_set_num_threads(ThreadsFor(p, K::kGates));
  static std::mutex mu;
  static std::map<decltype(p.Key()), std::unique_ptr<Entry<K>>> cache;
  std::lock_guard<std::mutex> lock(mu);
  auto& e = cache[p.Key()];
  if (!e) e = std::make_unique<Entry<K>>(p);
  return e.get();
}

using F32 = ffi::Buffer<ffi::F32>;
using Out = ffi::ResultBuffer<ffi::F32>;
using Token = ffi::Buffer<ffi::U32>;  // (slot index, generation) of a workspace in a Pool
constexpr char kReverse[] = "reverse";
using Reverse = ffi::Attr<int32_t, kReverse>;
using Args = std::unordered_map<int, memory>;

// A sequence and a carry in rnnlab's order: (xs, c0, h0), (ys, cT, hT), or their gradients.
// c is the LSTM's cell state; cells without one leave it empty.
struct Seq {
  F32 seq;
  std::optional<F32> c;
  F32 h;
};

// Adds `s` to `args` under oneDNN's arguments for its layer, its c and its h.
void Put(Args& args, const Seq& s, int layer, int c, int h, const memory::desc& layer_md,
         const memory::desc& iter_md) {
  args[layer] = memory(layer_md, Engine(), s.seq.typed_data());
  args[h] = memory(iter_md, Engine(), s.h.typed_data());
  if (s.c) args[c] = memory(iter_md, Engine(), s.c->typed_data());
}

bool Dims(F32 a, std::initializer_list<int64_t> want) {
  auto dims = a.dimensions();
  if (dims.size() != want.size()) return false;
  size_t i = 0;
  for (int64_t w : want)
    if (dims[i++] != w) return false;
  return true;
}

// The cached entry for the call's shapes, which every buffer must have: the kernel reads and
// writes them through raw pointers, so a mismatch is refused here rather than overrun.
template <class K>
ffi::ErrorOr<Entry<K>*> Find(const Seq& in, F32 w_x, F32 w_h, F32 b, int32_t reverse) {
  auto dims = in.seq.dimensions();
  if (dims.size() != 3) return ffi::Unexpected(ffi::Error::InvalidArgument("xs must be (B, T, D)"));
  if (in.h.dimensions().size() != 2)
    return ffi::Unexpected(ffi::Error::InvalidArgument("h0 must be (B, H)"));
  Problem p{dims[1], dims[0], dims[2], in.h.dimensions()[1], reverse != 0};
  const int64_t G = K::kGates, N = p.N, C = p.C, H = p.H;
  if (in.c.has_value() != K::kCellState || (in.c && !Dims(*in.c, {N, H})) ||
      !Dims(in.h, {N, H}) || !Dims(w_x, {C, G * H}) || !Dims(w_h, {H, G * H}) ||
      !Dims(b, {K::kBiasBlocks * H})) {
    std::string g = std::to_string(G);
    return ffi::Unexpected(ffi::Error::InvalidArgument(
        std::string(K::kCellState ? "c0, " : "") + "h0 (B, H), w_x (D, " + g + "H), w_h (H, " +
        g + "H), b (" + std::to_string(K::kBiasBlocks) + "H,) do not match xs (B, T, D)"));
  }
  return GetEntry<K>(p);
}

// The arguments every primitive of `e` reads: the inputs, the initial carry, the weights
// (reordered where stage `s` wants another format), the bias and the scratchpad.
template <class K>
Args Common(Entry<K>& e, Stage& s, const Seq& in, F32 w_x, F32 w_h, F32 b) {
  Args args;
  Put(args, in, DNNL_ARG_SRC_LAYER, DNNL_ARG_SRC_ITER_C, DNNL_ARG_SRC_ITER, e.d.src_layer,
      e.d.iter);
  args[DNNL_ARG_WEIGHTS_LAYER] = s.wl.Get(e.d.wl_user, w_x.typed_data(), e.scratch);
  args[DNNL_ARG_WEIGHTS_ITER] = s.wi.Get(e.d.wi_user, w_h.typed_data(), e.scratch);
  args[DNNL_ARG_BIAS] = memory(e.d.bias, Engine(), b.typed_data());
  args[DNNL_ARG_SCRATCHPAD] = e.scratch.For(s.pd.scratchpad_desc());
  return args;
}

// `body()` on OneThread, with oneDNN's and other exceptions turned into an internal error
// naming `what`.
template <class Fn>
ffi::Error Guarded(const std::string& what, Fn body) {
  ffi::Error result = ffi::Error::Success();
  OneThread::Run([&] {
    try {
      result = body();
    } catch (const dnnl::error& err) {
      result = ffi::Error::Internal("oneDNN " + what + ": " + err.what());
    } catch (const std::exception& err) {
      result = ffi::Error::Internal(what + ": " + err.what());
    }
  });
  return result;
}

// Forward training (the workspace into a slot of the entry's pool, its token into `token`) or,
// with token null, forward inference.
template <class K>
ffi::Error Forward(Seq in, F32 w_x, F32 w_h, F32 b, Seq out,
                   ffi::ResultBuffer<ffi::U32>* token, int32_t reverse) {
  return Guarded(std::string(K::kName) + (token ? " fwd" : " inference"), [&]() -> ffi::Error {
    auto found = Find<K>(in, w_x, w_h, b, reverse);
    if (!found) return found.error();
    Entry<K>& e = **found;
    std::lock_guard<std::mutex> lock(e.mu);
    Stage& s = token ? e.fwd : e.Inference();
    Args args = Common(e, s, in, w_x, w_h, b);
    Put(args, out, DNNL_ARG_DST_LAYER, DNNL_ARG_DST_ITER_C, DNNL_ARG_DST_ITER, e.d.dst_layer,
        e.d.iter);
    if (token) {
      if ((*token)->element_count() != 2)
        return ffi::Error::InvalidArgument("the token output must hold two uint32");
      size_t slot = e.pool.Take();
      args[DNNL_ARG_WORKSPACE] =
          memory(s.pd.workspace_desc(), Engine(), e.pool.slots[slot].mem.get());
      (*token)->typed_data()[0] = static_cast<uint32_t>(slot);
      (*token)->typed_data()[1] = e.pool.slots[slot].gen;
    }
    s.prim.execute(Stream(), args);
    Stream().wait();
    return ffi::Error::Success();
  });
}

// The workspace of the forward that returned `token`: its slot, or, where the slot has been
// taken since (see Workspaces above), a slot the forward is run into again from its inputs.
template <class K>
Pool::Slot& Workspace(Entry<K>& e, const uint32_t* token, const Seq& in, F32 w_x, F32 w_h,
                      F32 b) {
  if (Pool::Slot* slot = e.pool.Find(token)) return *slot;
  size_t taken = e.pool.Take();  // may grow the pool: index it after
  Pool::Slot& slot = e.pool.slots[taken];
  Args args = Common(e, e.fwd, in, w_x, w_h, b);
  std::vector<float> ys(e.d.dst_layer.get_size() / sizeof(float));
  std::vector<float> h(e.d.iter.get_size() / sizeof(float)), c(h.size());
  args[DNNL_ARG_DST_LAYER] = memory(e.d.dst_layer, Engine(), ys.data());
  args[DNNL_ARG_DST_ITER] = memory(e.d.iter, Engine(), h.data());
  if (K::kCellState) args[DNNL_ARG_DST_ITER_C] = memory(e.d.iter, Engine(), c.data());
  args[DNNL_ARG_WORKSPACE] = memory(e.fwd.pd.workspace_desc(), Engine(), slot.mem.get());
  e.fwd.prim.execute(Stream(), args);
  Stream().wait();
  return slot;
}

// Backward: from the forward's inputs `in`, outputs `out` and workspace (by `token`) and the
// gradients `d_out` of its outputs, the gradients `d_in` of its inputs and dw_x, dw_h, db. The
// workspace's slot is free again afterwards.
template <class K>
ffi::Error Backward(Seq in, F32 w_x, F32 w_h, F32 b, Seq out, Token token, Seq d_out,
                    Seq d_in, F32 dw_x, F32 dw_h, F32 db, int32_t reverse) {
  return Guarded(std::string(K::kName) + " bwd", [&]() -> ffi::Error {
    auto found = Find<K>(in, w_x, w_h, b, reverse);
    if (!found) return found.error();
    if (token.element_count() != 2)
      return ffi::Error::InvalidArgument("the token must hold two uint32");
    Entry<K>& e = **found;
    std::lock_guard<std::mutex> lock(e.mu);
    Stage& s = e.Backward();
    Pool::Slot& ws = Workspace(e, token.typed_data(), in, w_x, w_h, b);
    Args args = Common(e, s, in, w_x, w_h, b);
    Put(args, out, DNNL_ARG_DST_LAYER, DNNL_ARG_DST_ITER_C, DNNL_ARG_DST_ITER, e.d.dst_layer,
        e.d.iter);
    args[DNNL_ARG_WORKSPACE] = memory(s.pd.workspace_desc(), Engine(), ws.mem.get());
    Put(args, d_out, DNNL_ARG_DIFF_DST_LAYER, DNNL_ARG_DIFF_DST_ITER_C, DNNL_ARG_DIFF_DST_ITER,
        e.d.dst_layer, e.d.iter);
    Put(args, d_in, DNNL_ARG_DIFF_SRC_LAYER, DNNL_ARG_DIFF_SRC_ITER_C, DNNL_ARG_DIFF_SRC_ITER,
        e.d.src_layer, e.d.iter);
    memory dwl_out(e.d.wl_user, Engine(), dw_x.typed_data());
    memory dwi_out(e.d.wi_user, Engine(), dw_h.typed_data());
    args[DNNL_ARG_DIFF_WEIGHTS_LAYER] = e.dwl.Target(dwl_out);
    args[DNNL_ARG_DIFF_WEIGHTS_ITER] = e.dwi.Target(dwi_out);
    std::memset(db.untyped_data(), 0, e.d.bias.get_size());  // accumulated into, as the weights
    args[DNNL_ARG_DIFF_BIAS] = memory(e.d.bias, Engine(), db.typed_data());
    s.prim.execute(Stream(), args);
    e.dwl.Finish(dwl_out, e.scratch);
    e.dwi.Finish(dwi_out, e.scratch);
    Stream().wait();
    ws.busy = false;  // free for the next forward; its generation stays until one takes it
    return ffi::Error::Success();
  });
}

std::string FmtDesc(const memory::desc& md) {
  std::ostringstream os;
  os << "ndims=" << md.get_ndims() << " format_kind=" << static_cast<int>(md.get_format_kind())
     << " bytes=" << md.get_size();
  if (md.get_format_kind() == memory::format_kind::blocked) {
    os << " strides=";
    for (auto s : md.get_strides()) os << s << ",";
  }
  return os.str();
}

template <class K>
std::string Info(const Problem& p) {
  Entry<K>* e = GetEntry<K>(p);
  std::lock_guard<std::mutex> lock(e->mu);
  e->Backward();
  std::ostringstream os;
  for (auto [name, s] : {std::make_pair("fwd", &e->fwd), std::make_pair("bwd", &e->bwd)}) {
    os << name << " impl: " << s->pd.impl_info_str() << "\n";
    os << name << " weights_layer: " << FmtDesc(s->pd.weights_layer_desc())
       << " reorder=" << s->wl.needs_reorder << "\n";
    os << name << " weights_iter: " << FmtDesc(s->pd.weights_iter_desc())
       << " reorder=" << s->wi.needs_reorder << "\n";
  }
  os << "workspace bytes: " << e->fwd.pd.workspace_desc().get_size() << "\n";
  os << "bwd diff_weights_layer plain=" << e->dwl.plain
     << " diff_weights_iter plain=" << e->dwi.plain << "\n";
  os << "fwd scratchpad bytes: " << e->fwd.pd.scratchpad_desc().get_size()
     << " bwd scratchpad bytes: " << e->bwd.pd.scratchpad_desc().get_size()
     << " (shared buffer " << e->scratch.size << ")\n";
  return os.str();
}

// fn(K{}) for the cell named `cell` ("lstm" or "gru"); std::invalid_argument for another.
template <class Fn>
auto ForCell(const char* cell, Fn fn) {
  if (std::strcmp(cell, "lstm") == 0) return fn(Lstm{});
  if (std::strcmp(cell, "gru") == 0) return fn(LbrGru{});
  if (std::strcmp(cell, "rnn") == 0) return fn(Vanilla<false>{});
  if (std::strcmp(cell, "irnn") == 0) return fn(Vanilla<true>{});
  throw std::invalid_argument(std::string("no oneDNN cell ") + cell +
                              "; valid: lstm, gru, rnn, irnn");
}

// The handlers: each cell's buffers, in the order of the targets above.
using TokenOut = ffi::ResultBuffer<ffi::U32>;

ffi::Error LstmFwd(F32 xs, F32 c0, F32 h0, F32 w_x, F32 w_h, F32 b, Out ys, Out cT, Out hT,
                   TokenOut token, Reverse reverse) {
  return Forward<Lstm>({xs, c0, h0}, w_x, w_h, b, {*ys, *cT, *hT}, &token, *reverse);
}

ffi::Error LstmInfer(F32 xs, F32 c0, F32 h0, F32 w_x, F32 w_h, F32 b, Out ys, Out cT, Out hT,
                     Reverse reverse) {
  return Forward<Lstm>({xs, c0, h0}, w_x, w_h, b, {*ys, *cT, *hT}, nullptr, *reverse);
}

ffi::Error LstmBwd(F32 xs, F32 c0, F32 h0, F32 w_x, F32 w_h, F32 b, F32 ys, F32 cT, F32 hT,
                   Token token, F32 dys, F32 dcT, F32 dhT, Out dxs, Out dc0, Out dh0,
                   Out dw_x, Out dw_h, Out db, Reverse reverse) {
  return Backward<Lstm>({xs, c0, h0}, w_x, w_h, b, {ys, cT, hT}, token, {dys, dcT, dhT},
                        {*dxs, *dc0, *dh0}, *dw_x, *dw_h, *db, *reverse);
}

// The cells without a cell state (the gru, the rnn, the irnn): h only, through cell K.
template <class K>
ffi::Error HFwd(F32 xs, F32 h0, F32 w_x, F32 w_h, F32 b, Out ys, Out hT, TokenOut token,
                Reverse reverse) {
  return Forward<K>({xs, std::nullopt, h0}, w_x, w_h, b, {*ys, std::nullopt, *hT}, &token,
                    *reverse);
}

template <class K>
ffi::Error HInfer(F32 xs, F32 h0, F32 w_x, F32 w_h, F32 b, Out ys, Out hT, Reverse reverse) {
  return Forward<K>({xs, std::nullopt, h0}, w_x, w_h, b, {*ys, std::nullopt, *hT}, nullptr,
                    *reverse);
}

template <class K>
ffi::Error HBwd(F32 xs, F32 h0, F32 w_x, F32 w_h, F32 b, F32 ys, F32 hT, Token token, F32 dys,
                F32 dhT, Out dxs, Out dh0, Out dw_x, Out dw_h, Out db, Reverse reverse) {
  return Backward<K>({xs, std::nullopt, h0}, w_x, w_h, b, {ys, std::nullopt, hT}, token,
                     {dys, std::nullopt, dhT}, {*dxs, std::nullopt, *dh0}, *dw_x, *dw_h, *db,
                     *reverse);
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(OnednnLstmFwd, LstmFwd);
XLA_FFI_DEFINE_HANDLER_SYMBOL(OnednnLstmInfer, LstmInfer);
XLA_FFI_DEFINE_HANDLER_SYMBOL(OnednnLstmBwd, LstmBwd);
XLA_FFI_DEFINE_HANDLER_SYMBOL(OnednnGruFwd, HFwd<LbrGru>);
XLA_FFI_DEFINE_HANDLER_SYMBOL(OnednnGruInfer, HInfer<LbrGru>);
XLA_FFI_DEFINE_HANDLER_SYMBOL(OnednnGruBwd, HBwd<LbrGru>);
XLA_FFI_DEFINE_HANDLER_SYMBOL(OnednnRnnFwd, HFwd<Vanilla<false>>);
XLA_FFI_DEFINE_HANDLER_SYMBOL(OnednnRnnInfer, HInfer<Vanilla<false>>);
XLA_FFI_DEFINE_HANDLER_SYMBOL(OnednnRnnBwd, HBwd<Vanilla<false>>);
XLA_FFI_DEFINE_HANDLER_SYMBOL(OnednnIrnnFwd, HFwd<Vanilla<true>>);
XLA_FFI_DEFINE_HANDLER_SYMBOL(OnednnIrnnInfer, HInfer<Vanilla<true>>);
XLA_FFI_DEFINE_HANDLER_SYMBOL(OnednnIrnnBwd, HBwd<Vanilla<true>>);

extern "C" {

// The OpenMP threads of every later call: `fixed` (>= 1), or with fixed = 0 per problem, at
// most `cores`; rnnlab/onednn.py sets it once, before the first primitive is created.
void onednn_rnn_set_threads(int32_t fixed, int32_t cores) {
  g_fixed_threads.store(fixed < 0 ? 0 : fixed);
  g_cores.store(cores < 1 ? 1 : cores);
}

// The OpenMP threads a call of `cell` on (N sequences, H hidden units) runs on; -1 for an
// unknown cell.
int32_t onednn_rnn_threads_for(const char* cell, int64_t N, int64_t H) {
  try {
    return ForCell(cell, [&](auto k) { return ThreadsFor({1, N, 1, H, false}, decltype(k)::kGates); });
  } catch (...) {
    return -1;
  }
}

// The workspace pool of `cell`'s problem: out = (slots, busy slots, bytes per slot); 0, or -1
// on error.
int onednn_rnn_pool(const char* cell, int64_t T, int64_t N, int64_t C, int64_t H,
                    int32_t reverse, int64_t* out) {
  int rc = -1;
  OneThread::Run([&] {
    try {
      ForCell(cell, [&](auto k) {
        auto* e = GetEntry<decltype(k)>({T, N, C, H, reverse != 0});
        std::lock_guard<std::mutex> lock(e->mu);
        out[0] = static_cast<int64_t>(e->pool.slots.size());
        out[1] = e->pool.Busy();
        out[2] = static_cast<int64_t>(e->pool.bytes);
        return 0;
      });
      rc = 0;
    } catch (...) {
    }
  });
  return rc;
}

// Debug: writes a description of the chosen formats/implementations into buf; 0, or -1 with
// the error in buf.
int onednn_rnn_info(const char* cell, int64_t T, int64_t N, int64_t C, int64_t H,
                    int32_t reverse, char* buf, int64_t len) {
  int rc = 0;
  std::string s;
  OneThread::Run([&] {
    try {
      s = ForCell(cell, [&](auto k) { return Info<decltype(k)>({T, N, C, H, reverse != 0}); });
    } catch (const std::exception& err) {
      s = err.what();
      rc = -1;
    }
  });
  std::strncpy(buf, s.c_str(), len - 1);
  buf[len - 1] = 0;
  return rc;
}

}  // extern "C"
