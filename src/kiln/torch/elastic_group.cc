// c10d and Gloo report every failure by throwing; each entry point here catches at the
// boundary and returns a Status instead (STYLE.md, Errors).
#include "kiln/torch/elastic_group.h"

#include <exception>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"

namespace kiln::torch {
namespace {

// Runs `body`, turning anything c10d or Gloo throws into Unavailable prefixed by `what`.
template <typename Body>
absl::Status Guard(const std::string& what, Body&& body) {
  try {
    body();
    return absl::OkStatus();
  } catch (const c10::Error& e) {
    return absl::UnavailableError(absl::StrCat(what, ": ", e.what_without_backtrace()));
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat(what, ": ", e.what()));
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<StoreServer>> StoreServer::Open(const std::string& host,
                                                               std::chrono::milliseconds timeout) {
  c10::intrusive_ptr<c10d::TCPStore> store;
  const absl::Status status = Guard("opening a c10d store server", [&] {
    c10d::TCPStoreOptions options;
    options.port = 0;  // the kernel picks a free one; getPort() tells which
    options.isServer = true;
    options.waitWorkers = false;  // clients come and go with generations
    options.timeout = timeout;
    store = c10::make_intrusive<c10d::TCPStore>(host, options);
  });
  if (!status.ok()) return status;
  const int port = store->getPort();
  return std::unique_ptr<StoreServer>(new StoreServer(host, port, std::move(store)));
}

absl::StatusOr<std::unique_ptr<ElasticGroup>> ElasticGroup::Connect(
    const GroupOptions& options, std::unique_ptr<StoreServer> own_store) {
  if (options.world_size < 1 || options.rank < 0 || options.rank >= options.world_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("rank ", options.rank, " is not in a world of ", options.world_size));
  }
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::ProcessGroupGloo> group;
  const std::string where = absl::StrCat("generation ", options.generation, ": ");
  absl::Status status =
      Guard(absl::StrCat(where, "connecting to the store at ", options.store_host, ":",
                         options.store_port),
            [&] {
              if (own_store) {
                store = own_store->store();
              } else {
                c10d::TCPStoreOptions client;
                client.port = static_cast<uint16_t>(options.store_port);
                client.isServer = false;
                client.waitWorkers = false;
                client.timeout = options.timeout;
                store = c10::make_intrusive<c10d::TCPStore>(options.store_host, client);
              }
            });
  if (!status.ok()) return status;
  status = Guard(absl::StrCat(where, "forming the Gloo group of ", options.world_size), [&] {
    // Every generation gets fresh keys, even over a reused store.
    auto prefixed =
        c10::make_intrusive<c10d::PrefixStore>(absl::StrCat("gen", options.generation), store);
    auto gloo = c10d::ProcessGroupGloo::Options::create(options.timeout);
    // A named address, not createDefaultDevice: the default resolves the hostname, which
    // Debian maps to 127.0.1.1, unreachable from other nodes.
    gloo->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname(options.local_host));
    gloo->threads = 1;  // one collective at a time
    group = c10::make_intrusive<c10d::ProcessGroupGloo>(prefixed, options.rank, options.world_size,
                                                        gloo);
  });
  if (!status.ok()) return status;
  return std::unique_ptr<ElasticGroup>(
      new ElasticGroup(options, std::move(own_store), std::move(store), std::move(group)));
}

ElasticGroup::~ElasticGroup() {
  // The destructors of c10d objects do not throw in practice; the order matters: the
  // group's connections close before the store that a peer may still be reading.
  group_.reset();
  store_.reset();
  own_store_.reset();
}

absl::Status ElasticGroup::AllreduceSum(::torch::Tensor& tensor) {
  return Guard(absl::StrCat("generation ", options_.generation, ": all-reduce"), [&] {
    std::vector<::torch::Tensor> tensors{tensor};
    group_->allreduce(tensors)->wait();
  });
}

absl::Status ElasticGroup::Broadcast(::torch::Tensor& tensor, int root) {
  return Guard(absl::StrCat("generation ", options_.generation, ": broadcast from rank ", root),
               [&] {
                 std::vector<::torch::Tensor> tensors{tensor};
                 c10d::BroadcastOptions options;
                 options.rootRank = root;
                 group_->broadcast(tensors, options)->wait();
               });
}

}  // namespace kiln::torch
