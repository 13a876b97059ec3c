// elastic_group.h
//
// The c10d side of one elastic generation (ARCHITECTURE.md §5): `StoreServer`, the
// TCPStore a worker opens for every join (the master picks one joiner's as the
// generation's store), and `ElasticGroup`, a Gloo process group formed over that store.
// This is the adapter where c10d's and Gloo's exceptions become Status values: a failed
// collective is Unavailable, which the elastic loop answers by rolling back and re-joining.
// Includes LibTorch; only TUs under src/kiln/torch include it.
#pragma once

#include <torch/torch.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/Store.hpp>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace kiln::torch {

// A c10d TCPStore server on a free port of this host, with a client of its own. Opened
// before each join; kept only when the master makes it the generation's store.
class StoreServer {
 public:
  // Listens on every interface, on a port the kernel picks; `host` is the address its own
  // client connects to. Unavailable when the socket cannot be opened.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<StoreServer>> Open(
      const std::string& host, std::chrono::milliseconds timeout);

  int port() const { return port_; }
  const std::string& host() const { return host_; }
  const c10::intrusive_ptr<c10d::Store>& store() const { return store_; }

 private:
  StoreServer(std::string host, int port, c10::intrusive_ptr<c10d::Store> store)
      : host_(std::move(host)), port_(port), store_(std::move(store)) {}
  std::string host_;
  int port_;
  c10::intrusive_ptr<c10d::Store> store_;
};

struct GroupOptions {
  int64_t generation = 0;  // names the store prefix "gen<G>"
  int rank = 0;
  int world_size = 1;
  std::string store_host;  // the generation's store
  int store_port = 0;
  std::string local_host;  // the address peers reach this worker's Gloo device at
  // Bounds connecting to the store, forming the group and every collective: a peer that
  // stops answering turns into an error after this long instead of a hang.
  std::chrono::milliseconds timeout{30000};
};

// One generation's Gloo process group and the store it met over. Owned by the training
// thread; its methods block and are called from that thread only.
class ElasticGroup {
 public:
  // Connects to the generation's store (`own_store` when this worker hosts it, else a new
  // client to store_host:store_port) and forms the group of `world_size` ranks. Blocks
  // until every rank has arrived or `timeout` passed. Unavailable when a peer or the store
  // cannot be reached in time; InvalidArgument for a rank outside [0, world_size).
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<ElasticGroup>> Connect(
      const GroupOptions& options, std::unique_ptr<StoreServer> own_store);
  ~ElasticGroup();

  // Sums `tensor` (contiguous, on the CPU) over all ranks, in place. Unavailable when the
  // collective fails (a peer died, closed its connections or timed out); `tensor` then
  // holds garbage.
  [[nodiscard]] absl::Status AllreduceSum(::torch::Tensor& tensor);
  // Overwrites `tensor` on every rank with its value on `root`. Unavailable as above;
  // non-root tensors then hold garbage.
  [[nodiscard]] absl::Status Broadcast(::torch::Tensor& tensor, int root);

  int rank() const { return options_.rank; }
  int world_size() const { return options_.world_size; }

 private:
  ElasticGroup(GroupOptions options, std::unique_ptr<StoreServer> own_store,
               c10::intrusive_ptr<c10d::Store> store,
               c10::intrusive_ptr<c10d::ProcessGroupGloo> group)
      : options_(std::move(options)),
        own_store_(std::move(own_store)),
        store_(std::move(store)),
        group_(std::move(group)) {}

  GroupOptions options_;
  // Destroyed in reverse: the group first, then the stores it met over.
  std::unique_ptr<StoreServer> own_store_;
  c10::intrusive_ptr<c10d::Store> store_;
  c10::intrusive_ptr<c10d::ProcessGroupGloo> group_;
};

}  // namespace kiln::torch
