// router_test.cc

#include "kiln/net/router.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "kiln/net/testing/recording_reply_sink.h"

namespace kiln::net {
namespace {

using ::testing::ElementsAre;
using ::testing::Pair;

Handler Named(std::string name, std::string* called) {
  return [name, called](HttpRequest&, Responder) { *called = name; };
}

HttpRequest MakeRequest(std::string method, std::string path) {
  HttpRequest request;
  request.method = std::move(method);
  request.path = std::move(path);
  return request;
}

TEST(RouterTest, MatchesLiteralAndParameterSegments) {
  std::string called;
  Router router;
  router.Add("GET", "/api/v1/jobs", Named("list", &called));
  router.Add("GET", "/api/v1/jobs/{id}/logs", Named("logs", &called));
  HttpRequest request = MakeRequest("GET", "/api/v1/jobs/42/logs");
  const Route* route = router.Match(request);
  ASSERT_NE(route, nullptr);
  EXPECT_EQ(route->pattern, "/api/v1/jobs/{id}/logs");
  EXPECT_THAT(request.path_params, ElementsAre(Pair("id", "42")));
}

TEST(RouterTest, LiteralSegmentsWinOverParameters) {
  std::string called;
  Router router;
  router.Add("GET", "/jobs/{id}", Named("by-id", &called));
  router.Add("GET", "/jobs/search", Named("search", &called));
  router.Add("GET", "/{kind}/search", Named("kind-search", &called));
  HttpRequest search = MakeRequest("GET", "/jobs/search");
  ASSERT_NE(router.Match(search), nullptr);
  EXPECT_EQ(router.Match(search)->pattern, "/jobs/search");
  EXPECT_TRUE(search.path_params.empty());
  HttpRequest by_id = MakeRequest("GET", "/jobs/7");
  EXPECT_EQ(router.Match(by_id)->pattern, "/jobs/{id}");
  HttpRequest other = MakeRequest("GET", "/models/search");
  EXPECT_EQ(router.Match(other)->pattern, "/{kind}/search");
  EXPECT_THAT(other.path_params, ElementsAre(Pair("kind", "models")));
}

TEST(RouterTest, ParametersNeverMatchEmptySegments) {
  std::string called;
  Router router;
  router.Add("GET", "/jobs/{id}", Named("by-id", &called));
  HttpRequest request = MakeRequest("GET", "/jobs/");
  EXPECT_EQ(router.Match(request), nullptr);
}

TEST(RouterTest, IgnoresOneTrailingSlash) {
  std::string called;
  Router router;
  router.Add("GET", "/jobs", Named("list", &called));
  router.Add("GET", "/", Named("root", &called));
  HttpRequest request = MakeRequest("GET", "/jobs/");
  EXPECT_NE(router.Match(request), nullptr);
  HttpRequest root = MakeRequest("GET", "/");
  ASSERT_NE(router.Match(root), nullptr);
  EXPECT_EQ(router.Match(root)->pattern, "/");
}

TEST(RouterTest, ReportsMethodNotAllowedOnlyForKnownPaths) {
  std::string called;
  Router router;
  router.Add("GET", "/jobs/{id}", Named("get", &called));
  router.Add("DELETE", "/jobs/{id}", Named("delete", &called));
  bool method_not_allowed = false;
  HttpRequest post = MakeRequest("POST", "/jobs/3");
  EXPECT_EQ(router.Match(post, &method_not_allowed), nullptr);
  EXPECT_TRUE(method_not_allowed);
  EXPECT_THAT(router.AllowedMethods("/jobs/3"), ElementsAre("DELETE", "GET"));
  HttpRequest unknown = MakeRequest("GET", "/jbos/3");
  EXPECT_EQ(router.Match(unknown, &method_not_allowed), nullptr);
  EXPECT_FALSE(method_not_allowed);
  EXPECT_TRUE(router.AllowedMethods("/jbos/3").empty());
}

TEST(RouterTest, DispatchesByMethod) {
  std::string called;
  Router router;
  router.Add("GET", "/jobs/{id}", Named("get", &called));
  router.Add("DELETE", "/jobs/{id}", Named("delete", &called));
  HttpRequest request = MakeRequest("DELETE", "/jobs/3");
  const Route* route = router.Match(request);
  ASSERT_NE(route, nullptr);
  route->handler(request, Responder(std::make_shared<RecordingReplySink>()));
  EXPECT_EQ(called, "delete");
}

TEST(RouterDeathTest, DuplicateRouteCrashes) {
  Router router;
  std::string called;
  router.Add("GET", "/jobs/{id}", Named("a", &called));
  EXPECT_DEATH(router.Add("GET", "/jobs/{name}", Named("b", &called)), "duplicate route");
}

TEST(RouterDeathTest, MalformedPatternCrashes) {
  Router router;
  std::string called;
  EXPECT_DEATH(router.Add("GET", "jobs", Named("a", &called)), "KILN_CHECK");
  EXPECT_DEATH(router.Add("GET", "/jobs/{}", Named("a", &called)), "KILN_CHECK");
  EXPECT_DEATH(router.Add("GET", "/jobs/x{id}", Named("a", &called)), "KILN_CHECK");
}

TEST(RouterTest, RoutesStayValidWhenTheRouterIsMoved) {
  std::string called;
  Router router;
  router.Add("GET", "/a", Named("a", &called));
  HttpRequest request = MakeRequest("GET", "/a");
  const Route* before = router.Match(request);
  Router moved = std::move(router);
  EXPECT_EQ(moved.Match(request), before);
}

}  // namespace
}  // namespace kiln::net
