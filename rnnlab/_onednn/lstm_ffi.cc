// rnnlab's plain LSTM (rnnlab/cells.py "lstm", no peepholes) as oneDNN's fused LSTM
// primitive, called from JAX through two XLA FFI custom calls on the CPU. rnnlab/onednn.py
// compiles this file with g++ on first use (against jaxlib's FFI headers and the
// onednn-cpu-gomp / onednn-devel-cpu-gomp wheels, oneDNN v3.2), loads it with ctypes and
// registers the targets; engine.scan(onednn=True) runs it. One layer, one direction
// (left-to-right, or right-to-left for scan(reverse=True)), full-length sequences, float32.
//
// Layouts (rnnlab's, so no copies or transposes on the JAX side):
//   xs (B, T, D)          -> oneDNN src_layer, logical (T, N, C), format ntc
//   ys (B, T, H)          -> dst_layer, ntc
//   c0, h0, cT, hT (B, H) -> src_iter(_c) / dst_iter(_c), logical (1, 1, N, H), ldnc
//   w_x (D, 4H)           -> weights_layer, logical (1, 1, D, 4, H), ldigo (the same bytes)
//   w_h (H, 4H)           -> weights_iter,  logical (1, 1, H, 4, H), ldigo
//   b (4H,)               -> bias, logical (1, 1, 4, H), ldgo
// The gate order (i, f, g, o) is oneDNN's vanilla_lstm order.
//
// Targets (attribute reverse: 0 left-to-right, 1 right-to-left):
//   onednn_lstm_fwd(xs, c0, h0, w_x, w_h, b) -> (ys, hT, cT, workspace u8[ws_bytes])
//   onednn_lstm_infer(xs, c0, h0, w_x, w_h, b) -> (ys, hT, cT)   (no workspace: nothing
//       differentiates the call)
//   onednn_lstm_bwd(xs, c0, h0, w_x, w_h, b, ys, hT, cT, workspace, dys, dhT, dcT)
//       -> (dxs, dc0, dh0, dw_x, dw_h, db)
// and the C functions onednn_lstm_workspace_bytes(T, N, C, H, reverse) (Python sizes the
// workspace output with it at trace time) and onednn_lstm_info(...) (debugging: the
// implementation and weight formats oneDNN picked).
//
// Primitive descriptors, primitives, weight reorders, reordered weight buffers and a
// scratchpad are cached per (T, N, C, H, reverse) and never evicted, each entry with its
// own mutex.

#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <tuple>
#include <unordered_map>

#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
using dnnl::memory;
using tag = dnnl::memory::format_tag;
using dt = dnnl::memory::data_type;

namespace {

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

struct Descs {
  memory::desc src_layer, src_iter, wl_user, wi_user, bias, dst_layer, dst_iter;
  Descs(int64_t T, int64_t N, int64_t C, int64_t H)
      : src_layer({T, N, C}, dt::f32, tag::ntc),
        src_iter({1, 1, N, H}, dt::f32, tag::ldnc),
        wl_user({1, 1, C, 4, H}, dt::f32, tag::ldigo),
        wi_user({1, 1, H, 4, H}, dt::f32, tag::ldigo),
        bias({1, 1, 4, H}, dt::f32, tag::ldgo),
        dst_layer({T, N, H}, dt::f32, tag::ntc),
        dst_iter({1, 1, N, H}, dt::f32, tag::ldnc) {}
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
    reorder.execute(Stream(), {{DNNL_ARG_FROM, u}, {DNNL_ARG_TO, buf},
                               {DNNL_ARG_SCRATCHPAD, scratch.For(pd.scratchpad_desc())}});
    return buf;
  }
};

struct Entry {
  std::mutex mu;
  Descs d;
  Scratch scratch;
  dnnl::lstm_forward::primitive_desc fwd_pd;
  dnnl::lstm_forward fwd;
  WeightSlot fwd_wl, fwd_wi;
  bool bwd_ready = false;
  dnnl::lstm_backward::primitive_desc bwd_pd;
  dnnl::lstm_backward bwd;
  WeightSlot bwd_wl, bwd_wi;
  bool diff_wl_plain = true, diff_wi_plain = true;
  memory diff_wl_buf, diff_wi_buf;
  WeightSlot diff_wl_back, diff_wi_back;  // reorders of the diff weights back to ldigo
  bool inf_ready = false;  // forward_inference: no workspace, for calls nothing differentiates
  dnnl::lstm_forward::primitive_desc inf_pd;
  dnnl::lstm_forward inf;
  WeightSlot inf_wl, inf_wi;

  dnnl::rnn_direction dir;

  Entry(int64_t T, int64_t N, int64_t C, int64_t H, bool reverse)
      : d(T, N, C, H),
        dir(reverse ? dnnl::rnn_direction::unidirectional_right2left
                    : dnnl::rnn_direction::unidirectional_left2right) {
    memory::desc wl_any({1, 1, C, 4, H}, dt::f32, tag::any);
    memory::desc wi_any({1, 1, H, 4, H}, dt::f32, tag::any);
    fwd_pd = dnnl::lstm_forward::primitive_desc(
        Engine(), dnnl::prop_kind::forward_training,
        dir, d.src_layer, d.src_iter, d.src_iter,
        wl_any, wi_any, d.bias, d.dst_layer, d.dst_iter, d.dst_iter, UserScratchpad());
    fwd = dnnl::lstm_forward(fwd_pd);
    scratch.Reserve(fwd_pd.scratchpad_desc());
    fwd_wl.Init(d.wl_user, fwd_pd.weights_layer_desc(), scratch);
    fwd_wi.Init(d.wi_user, fwd_pd.weights_iter_desc(), scratch);
  }

  void InitInf(int64_t C, int64_t H) {
    if (inf_ready) return;
    memory::desc wl_any({1, 1, C, 4, H}, dt::f32, tag::any);
    memory::desc wi_any({1, 1, H, 4, H}, dt::f32, tag::any);
    inf_pd = dnnl::lstm_forward::primitive_desc(
        Engine(), dnnl::prop_kind::forward_inference, dir, d.src_layer, d.src_iter, d.src_iter,
        wl_any, wi_any, d.bias, d.dst_layer, d.dst_iter, d.dst_iter, UserScratchpad());
    inf = dnnl::lstm_forward(inf_pd);
    scratch.Reserve(inf_pd.scratchpad_desc());
    inf_wl.Init(d.wl_user, inf_pd.weights_layer_desc(), scratch);
    inf_wi.Init(d.wi_user, inf_pd.weights_iter_desc(), scratch);
    inf_ready = true;
  }

  void InitBwd(int64_t T, int64_t N, int64_t C, int64_t H) {
    if (bwd_ready) return;
    memory::desc wl_any({1, 1, C, 4, H}, dt::f32, tag::any);
    memory::desc wi_any({1, 1, H, 4, H}, dt::f32, tag::any);
    // Diff weights: ask for the user's plain ldigo first; fall back to `any` + reorder.
    auto make = [&](const memory::desc& dwl, const memory::desc& dwi, bool allow_empty) {
      return dnnl::lstm_backward::primitive_desc(
          Engine(), dnnl::prop_kind::backward,
          dir, d.src_layer, d.src_iter, d.src_iter,
          wl_any, wi_any, d.bias, d.dst_layer, d.dst_iter, d.dst_iter,
          d.src_layer, d.src_iter, d.src_iter, dwl, dwi, d.bias, d.dst_layer, d.dst_iter,
          d.dst_iter, fwd_pd, UserScratchpad(), allow_empty);
    };
    bwd_pd = make(d.wl_user, d.wi_user, true);
    if (!bwd_pd) bwd_pd = make(wl_any, wi_any, false);
    bwd = dnnl::lstm_backward(bwd_pd);
    scratch.Reserve(bwd_pd.scratchpad_desc());
    bwd_wl.Init(d.wl_user, bwd_pd.weights_layer_desc(), scratch);
    bwd_wi.Init(d.wi_user, bwd_pd.weights_iter_desc(), scratch);
    diff_wl_plain = (bwd_pd.diff_weights_layer_desc() == d.wl_user);
    diff_wi_plain = (bwd_pd.diff_weights_iter_desc() == d.wi_user);
    if (!diff_wl_plain) {
      diff_wl_buf = memory(bwd_pd.diff_weights_layer_desc(), Engine());
      diff_wl_back.Init(bwd_pd.diff_weights_layer_desc(), d.wl_user, scratch);
    }
    if (!diff_wi_plain) {
      diff_wi_buf = memory(bwd_pd.diff_weights_iter_desc(), Engine());
      diff_wi_back.Init(bwd_pd.diff_weights_iter_desc(), d.wi_user, scratch);
    }
    bwd_ready = true;
  }
};

std::mutex g_cache_mu;
std::map<std::tuple<int64_t, int64_t, int64_t, int64_t, bool>, std::unique_ptr<Entry>> g_cache;

Entry* GetEntry(int64_t T, int64_t N, int64_t C, int64_t H, bool reverse) {
  std::lock_guard<std::mutex> lock(g_cache_mu);
  auto key = std::make_tuple(T, N, C, H, reverse);
  auto it = g_cache.find(key);
  if (it != g_cache.end()) return it->second.get();
  auto e = std::make_unique<Entry>(T, N, C, H, reverse);
  Entry* p = e.get();
  g_cache.emplace(key, std::move(e));
  return p;
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

// The shapes every buffer must have for xs (N, T, C) and hidden size H: the kernel reads and
// writes them through raw pointers, so a mismatch is refused here rather than overrun.
bool Shaped(int64_t N, int64_t C, int64_t H, ffi::Buffer<ffi::F32>& c0,
            ffi::Buffer<ffi::F32>& h0, ffi::Buffer<ffi::F32>& w_x, ffi::Buffer<ffi::F32>& w_h,
            ffi::Buffer<ffi::F32>& b) {
  auto is = [](auto dims, std::initializer_list<int64_t> want) {
    if (dims.size() != want.size()) return false;
    size_t i = 0;
    for (int64_t w : want)
      if (dims[i++] != w) return false;
    return true;
  };
  return is(c0.dimensions(), {N, H}) &&
         is(h0.dimensions(), {N, H}) && is(w_x.dimensions(), {C, 4 * H}) &&
         is(w_h.dimensions(), {H, 4 * H}) && is(b.dimensions(), {4 * H});
}

ffi::Error LstmFwdImpl(ffi::Buffer<ffi::F32> xs, ffi::Buffer<ffi::F32> c0,
                       ffi::Buffer<ffi::F32> h0, ffi::Buffer<ffi::F32> w_x,
                       ffi::Buffer<ffi::F32> w_h, ffi::Buffer<ffi::F32> b,
                       ffi::ResultBuffer<ffi::F32> ys, ffi::ResultBuffer<ffi::F32> hT,
                       ffi::ResultBuffer<ffi::F32> cT, ffi::ResultBuffer<ffi::U8> ws,
                       int32_t reverse) {
  try {
    auto dims = xs.dimensions();
    if (dims.size() != 3) return ffi::Error::InvalidArgument("xs must be (B, T, D)");
    int64_t N = dims[0], T = dims[1], C = dims[2];
    if (h0.dimensions().size() != 2) return ffi::Error::InvalidArgument("h0 must be (B, H)");
    int64_t H = h0.dimensions()[1];
    if (!Shaped(N, C, H, c0, h0, w_x, w_h, b))
      return ffi::Error::InvalidArgument("c0, h0 (B, H), w_x (D, 4H), w_h (H, 4H), b (4H,) "
                                         "do not match xs (B, T, D)");
    Entry* e = GetEntry(T, N, C, H, reverse != 0);
    std::lock_guard<std::mutex> lock(e->mu);
    if (ws->size_bytes() < e->fwd_pd.workspace_desc().get_size())
      return ffi::Error::InvalidArgument("workspace output too small");
    auto& d = e->d;
    auto& eng = Engine();
    memory wl = e->fwd_wl.Get(d.wl_user, w_x.typed_data(), e->scratch);
    memory wi = e->fwd_wi.Get(d.wi_user, w_h.typed_data(), e->scratch);
    std::unordered_map<int, memory> args = {
        {DNNL_ARG_SRC_LAYER, memory(d.src_layer, eng, xs.typed_data())},
        {DNNL_ARG_SRC_ITER, memory(d.src_iter, eng, h0.typed_data())},
        {DNNL_ARG_SRC_ITER_C, memory(d.src_iter, eng, c0.typed_data())},
        {DNNL_ARG_WEIGHTS_LAYER, wl},
        {DNNL_ARG_WEIGHTS_ITER, wi},
        {DNNL_ARG_BIAS, memory(d.bias, eng, b.typed_data())},
        {DNNL_ARG_DST_LAYER, memory(d.dst_layer, eng, ys->typed_data())},
        {DNNL_ARG_DST_ITER, memory(d.dst_iter, eng, hT->typed_data())},
        {DNNL_ARG_DST_ITER_C, memory(d.dst_iter, eng, cT->typed_data())},
        {DNNL_ARG_WORKSPACE, memory(e->fwd_pd.workspace_desc(), eng, ws->untyped_data())},
        {DNNL_ARG_SCRATCHPAD, e->scratch.For(e->fwd_pd.scratchpad_desc())},
    };
    e->fwd.execute(Stream(), args);
    Stream().wait();
  } catch (const dnnl::error& err) {
    return ffi::Error::Internal(std::string("oneDNN lstm fwd: ") + err.what());
  } catch (const std::exception& err) {
    return ffi::Error::Internal(std::string("lstm fwd: ") + err.what());
  }
  return ffi::Error::Success();
}

ffi::Error LstmInferImpl(ffi::Buffer<ffi::F32> xs, ffi::Buffer<ffi::F32> c0,
                         ffi::Buffer<ffi::F32> h0, ffi::Buffer<ffi::F32> w_x,
                         ffi::Buffer<ffi::F32> w_h, ffi::Buffer<ffi::F32> b,
                         ffi::ResultBuffer<ffi::F32> ys, ffi::ResultBuffer<ffi::F32> hT,
                         ffi::ResultBuffer<ffi::F32> cT, int32_t reverse) {
  try {
    auto dims = xs.dimensions();
    if (dims.size() != 3) return ffi::Error::InvalidArgument("xs must be (B, T, D)");
    int64_t N = dims[0], T = dims[1], C = dims[2];
    if (h0.dimensions().size() != 2) return ffi::Error::InvalidArgument("h0 must be (B, H)");
    int64_t H = h0.dimensions()[1];
    if (!Shaped(N, C, H, c0, h0, w_x, w_h, b))
      return ffi::Error::InvalidArgument("c0, h0 (B, H), w_x (D, 4H), w_h (H, 4H), b (4H,) "
                                         "do not match xs (B, T, D)");
    Entry* e = GetEntry(T, N, C, H, reverse != 0);
    std::lock_guard<std::mutex> lock(e->mu);
    e->InitInf(C, H);
    auto& d = e->d;
    auto& eng = Engine();
    memory wl = e->inf_wl.Get(d.wl_user, w_x.typed_data(), e->scratch);
    memory wi = e->inf_wi.Get(d.wi_user, w_h.typed_data(), e->scratch);
    std::unordered_map<int, memory> args = {
        {DNNL_ARG_SRC_LAYER, memory(d.src_layer, eng, xs.typed_data())},
        {DNNL_ARG_SRC_ITER, memory(d.src_iter, eng, h0.typed_data())},
        {DNNL_ARG_SRC_ITER_C, memory(d.src_iter, eng, c0.typed_data())},
        {DNNL_ARG_WEIGHTS_LAYER, wl},
        {DNNL_ARG_WEIGHTS_ITER, wi},
        {DNNL_ARG_BIAS, memory(d.bias, eng, b.typed_data())},
        {DNNL_ARG_DST_LAYER, memory(d.dst_layer, eng, ys->typed_data())},
        {DNNL_ARG_DST_ITER, memory(d.dst_iter, eng, hT->typed_data())},
        {DNNL_ARG_DST_ITER_C, memory(d.dst_iter, eng, cT->typed_data())},
        {DNNL_ARG_SCRATCHPAD, e->scratch.For(e->inf_pd.scratchpad_desc())},
    };
    e->inf.execute(Stream(), args);
    Stream().wait();
  } catch (const dnnl::error& err) {
    return ffi::Error::Internal(std::string("oneDNN lstm inference: ") + err.what());
  } catch (const std::exception& err) {
    return ffi::Error::Internal(std::string("lstm inference: ") + err.what());
  }
  return ffi::Error::Success();
}

ffi::Error LstmBwdImpl(ffi::Buffer<ffi::F32> xs, ffi::Buffer<ffi::F32> c0,
                       ffi::Buffer<ffi::F32> h0, ffi::Buffer<ffi::F32> w_x,
                       ffi::Buffer<ffi::F32> w_h, ffi::Buffer<ffi::F32> b,
                       ffi::Buffer<ffi::F32> ys, ffi::Buffer<ffi::F32> hT,
                       ffi::Buffer<ffi::F32> cT, ffi::Buffer<ffi::U8> ws,
                       ffi::Buffer<ffi::F32> dys, ffi::Buffer<ffi::F32> dhT,
                       ffi::Buffer<ffi::F32> dcT, ffi::ResultBuffer<ffi::F32> dxs,
                       ffi::ResultBuffer<ffi::F32> dc0, ffi::ResultBuffer<ffi::F32> dh0,
                       ffi::ResultBuffer<ffi::F32> dw_x, ffi::ResultBuffer<ffi::F32> dw_h,
                       ffi::ResultBuffer<ffi::F32> db, int32_t reverse) {
  try {
    auto dims = xs.dimensions();
    if (dims.size() != 3) return ffi::Error::InvalidArgument("xs must be (B, T, D)");
    int64_t N = dims[0], T = dims[1], C = dims[2];
    if (h0.dimensions().size() != 2) return ffi::Error::InvalidArgument("h0 must be (B, H)");
    int64_t H = h0.dimensions()[1];
    if (!Shaped(N, C, H, c0, h0, w_x, w_h, b))
      return ffi::Error::InvalidArgument("c0, h0 (B, H), w_x (D, 4H), w_h (H, 4H), b (4H,) "
                                         "do not match xs (B, T, D)");
    Entry* e = GetEntry(T, N, C, H, reverse != 0);
    std::lock_guard<std::mutex> lock(e->mu);
    e->InitBwd(T, N, C, H);
    auto& d = e->d;
    auto& eng = Engine();
    memory wl = e->bwd_wl.Get(d.wl_user, w_x.typed_data(), e->scratch);
    memory wi = e->bwd_wi.Get(d.wi_user, w_h.typed_data(), e->scratch);
    memory dwl_user(d.wl_user, eng, dw_x->typed_data());
    memory dwi_user(d.wi_user, eng, dw_h->typed_data());
    memory dwl = e->diff_wl_plain ? dwl_user : e->diff_wl_buf;
    memory dwi = e->diff_wi_plain ? dwi_user : e->diff_wi_buf;
    // oneDNN's RNN backward accumulates into the weight/bias gradients: zero them.
    std::memset(dwl.get_data_handle(), 0, e->bwd_pd.diff_weights_layer_desc().get_size());
    std::memset(dwi.get_data_handle(), 0, e->bwd_pd.diff_weights_iter_desc().get_size());
    std::memset(db->untyped_data(), 0, db->size_bytes());
    std::unordered_map<int, memory> args = {
        {DNNL_ARG_SRC_LAYER, memory(d.src_layer, eng, xs.typed_data())},
        {DNNL_ARG_SRC_ITER, memory(d.src_iter, eng, h0.typed_data())},
        {DNNL_ARG_SRC_ITER_C, memory(d.src_iter, eng, c0.typed_data())},
        {DNNL_ARG_WEIGHTS_LAYER, wl},
        {DNNL_ARG_WEIGHTS_ITER, wi},
        {DNNL_ARG_BIAS, memory(d.bias, eng, b.typed_data())},
        {DNNL_ARG_DST_LAYER, memory(d.dst_layer, eng, ys.typed_data())},
        {DNNL_ARG_DST_ITER, memory(d.dst_iter, eng, hT.typed_data())},
        {DNNL_ARG_DST_ITER_C, memory(d.dst_iter, eng, cT.typed_data())},
        {DNNL_ARG_WORKSPACE, memory(e->bwd_pd.workspace_desc(), eng, ws.untyped_data())},
        {DNNL_ARG_DIFF_DST_LAYER, memory(d.dst_layer, eng, dys.typed_data())},
        {DNNL_ARG_DIFF_DST_ITER, memory(d.dst_iter, eng, dhT.typed_data())},
        {DNNL_ARG_DIFF_DST_ITER_C, memory(d.dst_iter, eng, dcT.typed_data())},
        {DNNL_ARG_DIFF_SRC_LAYER, memory(d.src_layer, eng, dxs->typed_data())},
        {DNNL_ARG_DIFF_SRC_ITER, memory(d.src_iter, eng, dh0->typed_data())},
        {DNNL_ARG_DIFF_SRC_ITER_C, memory(d.src_iter, eng, dc0->typed_data())},
        {DNNL_ARG_DIFF_WEIGHTS_LAYER, dwl},
        {DNNL_ARG_DIFF_WEIGHTS_ITER, dwi},
        {DNNL_ARG_DIFF_BIAS, memory(d.bias, eng, db->typed_data())},
        {DNNL_ARG_SCRATCHPAD, e->scratch.For(e->bwd_pd.scratchpad_desc())},
    };
    e->bwd.execute(Stream(), args);
    auto back = [&](WeightSlot& slot, memory& from, memory& to) {
      slot.reorder.execute(Stream(), {{DNNL_ARG_FROM, from}, {DNNL_ARG_TO, to},
                                      {DNNL_ARG_SCRATCHPAD, e->scratch.For(slot.pd.scratchpad_desc())}});
    };
    if (!e->diff_wl_plain) back(e->diff_wl_back, dwl, dwl_user);
    if (!e->diff_wi_plain) back(e->diff_wi_back, dwi, dwi_user);
    Stream().wait();
  } catch (const dnnl::error& err) {
    return ffi::Error::Internal(std::string("oneDNN lstm bwd: ") + err.what());
  } catch (const std::exception& err) {
    return ffi::Error::Internal(std::string("lstm bwd: ") + err.what());
  }
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(OnednnLstmFwd, LstmFwdImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()  // xs
                                  .Arg<ffi::Buffer<ffi::F32>>()  // c0
                                  .Arg<ffi::Buffer<ffi::F32>>()  // h0
                                  .Arg<ffi::Buffer<ffi::F32>>()  // w_x
                                  .Arg<ffi::Buffer<ffi::F32>>()  // w_h
                                  .Arg<ffi::Buffer<ffi::F32>>()  // b
                                  .Ret<ffi::Buffer<ffi::F32>>()  // ys
                                  .Ret<ffi::Buffer<ffi::F32>>()  // hT
                                  .Ret<ffi::Buffer<ffi::F32>>()  // cT
                                  .Ret<ffi::Buffer<ffi::U8>>()   // workspace
                                  .Attr<int32_t>("reverse"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(OnednnLstmInfer, LstmInferImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()  // xs
                                  .Arg<ffi::Buffer<ffi::F32>>()  // c0
                                  .Arg<ffi::Buffer<ffi::F32>>()  // h0
                                  .Arg<ffi::Buffer<ffi::F32>>()  // w_x
                                  .Arg<ffi::Buffer<ffi::F32>>()  // w_h
                                  .Arg<ffi::Buffer<ffi::F32>>()  // b
                                  .Ret<ffi::Buffer<ffi::F32>>()  // ys
                                  .Ret<ffi::Buffer<ffi::F32>>()  // hT
                                  .Ret<ffi::Buffer<ffi::F32>>()  // cT
                                  .Attr<int32_t>("reverse"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(OnednnLstmBwd, LstmBwdImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()  // xs
                                  .Arg<ffi::Buffer<ffi::F32>>()  // c0
                                  .Arg<ffi::Buffer<ffi::F32>>()  // h0
                                  .Arg<ffi::Buffer<ffi::F32>>()  // w_x
                                  .Arg<ffi::Buffer<ffi::F32>>()  // w_h
                                  .Arg<ffi::Buffer<ffi::F32>>()  // b
                                  .Arg<ffi::Buffer<ffi::F32>>()  // ys
                                  .Arg<ffi::Buffer<ffi::F32>>()  // hT
                                  .Arg<ffi::Buffer<ffi::F32>>()  // cT
                                  .Arg<ffi::Buffer<ffi::U8>>()   // workspace
                                  .Arg<ffi::Buffer<ffi::F32>>()  // dys
                                  .Arg<ffi::Buffer<ffi::F32>>()  // dhT
                                  .Arg<ffi::Buffer<ffi::F32>>()  // dcT
                                  .Ret<ffi::Buffer<ffi::F32>>()  // dxs
                                  .Ret<ffi::Buffer<ffi::F32>>()  // dc0
                                  .Ret<ffi::Buffer<ffi::F32>>()  // dh0
                                  .Ret<ffi::Buffer<ffi::F32>>()  // dw_x
                                  .Ret<ffi::Buffer<ffi::F32>>()  // dw_h
                                  .Ret<ffi::Buffer<ffi::F32>>()  // db
                                  .Attr<int32_t>("reverse"));

extern "C" {

// Bytes of the forward-training workspace; -1 on error.
int64_t onednn_lstm_workspace_bytes(int64_t T, int64_t N, int64_t C, int64_t H, int32_t reverse) {
  try {
    return static_cast<int64_t>(GetEntry(T, N, C, H, reverse != 0)->fwd_pd.workspace_desc().get_size());
  } catch (...) {
    return -1;
  }
}

// Debug: writes a description of the chosen formats/implementations into buf.
int onednn_lstm_info(int64_t T, int64_t N, int64_t C, int64_t H, int32_t reverse, char* buf,
                     int64_t len) {
  try {
    Entry* e = GetEntry(T, N, C, H, reverse != 0);
    {
      std::lock_guard<std::mutex> lock(e->mu);
      e->InitBwd(T, N, C, H);
    }
    std::ostringstream os;
    os << "fwd impl: " << e->fwd_pd.impl_info_str() << "\n";
    os << "fwd weights_layer: " << FmtDesc(e->fwd_pd.weights_layer_desc())
       << " reorder=" << e->fwd_wl.needs_reorder << "\n";
    os << "fwd weights_iter: " << FmtDesc(e->fwd_pd.weights_iter_desc())
       << " reorder=" << e->fwd_wi.needs_reorder << "\n";
    os << "workspace bytes: " << e->fwd_pd.workspace_desc().get_size() << "\n";
    os << "bwd impl: " << e->bwd_pd.impl_info_str() << "\n";
    os << "bwd weights_layer: " << FmtDesc(e->bwd_pd.weights_layer_desc())
       << " reorder=" << e->bwd_wl.needs_reorder << "\n";
    os << "bwd weights_iter: " << FmtDesc(e->bwd_pd.weights_iter_desc())
       << " reorder=" << e->bwd_wi.needs_reorder << "\n";
    os << "bwd diff_weights_layer plain=" << e->diff_wl_plain
       << " diff_weights_iter plain=" << e->diff_wi_plain << "\n";
    os << "fwd scratchpad bytes: " << e->fwd_pd.scratchpad_desc().get_size()
       << " bwd scratchpad bytes: " << e->bwd_pd.scratchpad_desc().get_size()
       << " (shared buffer " << e->scratch.size << ")\n";
    std::string s = os.str();
    std::strncpy(buf, s.c_str(), len - 1);
    buf[len - 1] = 0;
    return 0;
  } catch (const std::exception& err) {
    std::strncpy(buf, err.what(), len - 1);
    buf[len - 1] = 0;
    return -1;
  }
}

}  // extern "C"
