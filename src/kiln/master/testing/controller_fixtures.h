// controller_fixtures.h
//
// Builders shared by the master's controller tests: an agent's hello as the agent
// protocol carries it, and a user stored straight into the store (with the principal a
// request authenticated as that user would get).
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "gtest/gtest.h"
#include "kiln/api/agent_protocol.h"
#include "kiln/auth/authenticator.h"
#include "kiln/store/store.h"

namespace kiln::master::testing {

inline api::AgentHello Hello(const std::string& agent_id, int slots,
                             std::vector<int64_t> tasks = {}) {
  api::AgentHello hello;
  hello.agent_id = agent_id;
  hello.hostname = agent_id + ".example";
  hello.slots = slots;
  hello.tasks = std::move(tasks);
  return hello;
}

// Stores user `name` (created at `now`) and returns its principal.
inline auth::Principal AddUser(store::Store& store, int64_t now, const std::string& name,
                               bool admin) {
  store::UserRecord user;
  user.username = name;
  user.password_hash = "unused";
  user.admin = admin;
  user.created_at = now;
  auto created = store.CreateUser(user);
  EXPECT_TRUE(created.ok()) << created.status();
  auth::Principal p;
  p.kind = auth::Principal::Kind::kUser;
  p.user_id = created.ok() ? created->id : 0;
  p.username = name;
  p.admin = admin;
  return p;
}

}  // namespace kiln::master::testing
