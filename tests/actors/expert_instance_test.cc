// The ExpertInstance driven by its messages alone: what it does with good and bad work.
#include <doctest/doctest.h>

#include "actor_fixture.h"
#include "actors/expert_instance.h"

using namespace janus;
using namespace janus::actors;
using namespace janus::test;
using namespace std::chrono_literals;

TEST_CASE("an expert instance drops another epoch's work, refuses experts it does not hold, and runs its own") {
  ActorWorld w;
  caf::scoped_actor self{*w.sys};
  auto backend = make_expert_backend(w.ctx->model, Device{}, {0, 1, 2, 3}, false);
  REQUIRE(backend.ok());
  auto inst = w.sys->spawn<ExpertInstance>(w.ctx, 0, std::shared_ptr<ExpertBackend>(std::move(*backend)));
  Membership m;
  m.epoch = 2;
  m.scheduler = caf::actor_cast<caf::actor>(self);
  m.instances = {inst, caf::actor_cast<caf::actor>(self)};  // it is instance 0 of two
  auto layout = ExpertLayout::create(8, 4, {{0, 1, 2, 3}, {4, 5, 6, 7}});
  REQUIRE(layout.ok());
  m.layout = std::make_shared<ExpertLayout>(*layout);
  self->request(inst, 5s, m).receive([] {}, [](caf::error&) { FAIL("membership not acknowledged"); });

  const int H = w.ctx->model->config().hidden_size;
  Tensor h = Tensor::host(DType::kF32, 2, H);
  for (int i = 0; i < 2 * H; ++i) h.as<float>()[i] = 0.01f * static_cast<float>(i % 17) - 0.05f;

  self->send(inst, ExpertTask{{5, 0, 0, 1}, 0, h, {{0, 1, 0.5f}}, {}});  // epoch 1: stale
  self->send(inst, ExpertTask{{5, 0, 0, 2}, 0, h, {{1, 6, 0.5f}}, {}});  // expert 6 lives on instance 1
  self->send(inst, ExpertTask{{5, 0, 0, 2}, 0, h, {{0, 1, 0.5f}, {1, 3, 0.25f}}, {}});
  int got = 0;
  for (int i = 0; i < 2; ++i)
    self->receive([&](ExpertPartial& p) {
      ++got;
      CHECK(p.key.epoch == 2);
      if (got == 1) {
        CHECK(p.error.message().find("expert 6, which it does not hold") != std::string::npos);
        CHECK(p.error.code() == ErrorCode::kInternal);
      } else {
        CHECK(p.error.ok());
        REQUIRE(p.partial.rows == 2);
        CHECK(p.partial.dtype == DType::kF64);
        double norm0 = 0, norm1 = 0;
        for (int d = 0; d < H; ++d) {
          norm0 += std::abs(p.partial.as<double>()[d]);
          norm1 += std::abs(p.partial.as<double>()[H + d]);
        }
        CHECK(norm0 > 0);
        CHECK(norm1 > 0);
      }
    },
                  caf::after(5s) >> [] { FAIL("no partial result"); });
  self->request(inst, 5s, StatsQuery{}).receive([](ActorStats& s) {
    CHECK(s.dropped == 1);
    CHECK(s.messages == 4);  // membership and three tasks (queries are not counted)
    CHECK(s.name == "expert-0");
  },
                                                 [](caf::error&) { FAIL("no stats"); });
  // Weights for a coming placement: the answer is the load's Status.
  self->request(inst, 5s, LoadExperts{{0, 1, 2, 3, 4}}).receive([](Status& s) { CHECK(s.ok()); }, [](caf::error&) { FAIL("no answer"); });
  self->send_exit(inst, caf::exit_reason::user_shutdown);
}
