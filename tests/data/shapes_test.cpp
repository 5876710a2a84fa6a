// The shapes world: deterministic rendering, captions that parse back, the held-out split, and an
// evaluator that passes rendered ground truth and fails deliberately broken images.
#include <catch2/catch.hpp>

#include <fstream>
#include <set>

#include "diffuse/eval/shapes_eval.hpp"

namespace t_shapes {

using namespace diffuse;
using namespace diffuse::data;
using Catch::Matchers::Contains;

TEST_CASE("rendering is deterministic and anti-aliased", "[shapes]") {
  const ShapesWorld world(32, 7);
  const auto a = world.example(11), b = world.example(11), c = world.example(12);
  CHECK(a.image == b.image);
  CHECK(a.caption == b.caption);
  CHECK_FALSE(a.image == c.image);
  // Anti-aliasing: some pixels are neither background nor a palette colour.
  Scene s{32, 32, {{Shape::Circle, Colour::Red, 16.3, 16.3, 5.6}}};
  const auto img = render(s);
  std::set<int> reds;
  for (int x = 0; x < 32; ++x) reds.insert(img(16, x, 1));
  CHECK(reds.size() > 3);
  CHECK(img(16, 16, 0) == 215);
  CHECK(img(0, 0, 0) == 245);
  CHECK(render(Scene{64, 64, s.objects}).shape()[0] == 64);
}

TEST_CASE("captions parse back to the prompt they describe", "[shapes]") {
  const ShapesWorld world(32, 1);
  for (std::uint64_t i = 0; i < 300; ++i) {
    const auto e = world.example(i, i % 3 ? Split::Train : Split::HeldOut);
    INFO(e.caption);
    CHECK(parse_caption(e.caption) == e.prompt);
    // and the scene holds exactly the named objects
    std::size_t named = 0;
    for (const auto& o : e.prompt.objects) named += o.count;
    CHECK(e.scene.objects.size() == named);
  }
  CHECK(caption(parse_caption("a red circle above a blue square")) == "a red circle above a blue square");
  CHECK(parse_caption("three green triangles").objects[0].count == 3);
  CHECK(parse_caption("a yellow square left of a purple circle").relation == Relation::LeftOf);
  CHECK_THROWS_WITH(parse_caption("a pink circle"), Contains("unknown colour 'pink'"));
  CHECK_THROWS_WITH(parse_caption("two red circle"), Contains("unknown shape 'circle' for count 2"));
  CHECK_THROWS_WITH(parse_caption("a red circle near a blue square"), Contains("unexpected word 'near'"));
  CHECK_THROWS_AS(parse_caption(""), InputError);
}

TEST_CASE("held-out combinations never appear in the training split", "[shapes]") {
  const ShapesWorld world(32, 3);
  int held = 0;
  for (std::uint64_t i = 0; i < 600; ++i) {
    CHECK_FALSE(is_held_out(world.example(i, Split::Train).prompt));
    held += is_held_out(world.example(i, Split::HeldOut).prompt);
  }
  CHECK(held == 600);
  CHECK(is_held_out(parse_caption("a purple triangle")));
  CHECK(is_held_out(parse_caption("a red triangle left of a blue square")));
  CHECK(is_held_out(parse_caption("a red square right of a blue triangle")));
  CHECK_FALSE(is_held_out(parse_caption("a red square left of a blue triangle")));
}

TEST_CASE("the evaluator scores rendered ground truth at >= 0.99 in every category", "[shapes][eval]") {
  for (int size : {32, 64}) {
    DYNAMIC_SECTION("size " << size) {
      const ShapesWorld world(size, 5);
      const auto prompts = make_eval_prompts();
      eval::ShapesScore score;
      std::mt19937_64 rng(17);
      for (const auto& p : prompts) {
        const auto scene = world.layout(parse_caption(p.prompt), rng);
        const bool ok = eval::evaluate_image(render(scene), p);
        if (!ok) WARN("failed: " << p.prompt);
        score.add(p.category, p.held_out, ok);
      }
      INFO(score.table());
      for (const auto& [c, v] : score.per_category) CHECK(score.category_score(c) >= 0.99);
      CHECK(score.overall() >= 0.99);
    }
  }
}

TEST_CASE("the evaluator fails blank, noisy and deliberately wrong images", "[shapes][eval]") {
  const EvalPrompt red_circle{"a red circle", Category::Colors, false};
  io::RGBImage blank({32, 32, 3});
  blank.fill(245);
  CHECK_FALSE(eval::evaluate_image(blank, red_circle));
  std::mt19937 rng(3);
  io::RGBImage noise({32, 32, 3});
  for (auto& v : noise) v = static_cast<std::uint8_t>(rng() % 256);
  CHECK_FALSE(eval::evaluate_image(noise, red_circle));

  auto scene_img = [](std::vector<Object> objs) { return render(Scene{32, 32, std::move(objs)}); };
  // wrong colour
  CHECK(eval::evaluate_image(scene_img({{Shape::Circle, Colour::Red, 16, 16, 5}}), red_circle));
  CHECK_FALSE(eval::evaluate_image(scene_img({{Shape::Circle, Colour::Blue, 16, 16, 5}}), red_circle));
  // wrong shape
  CHECK_FALSE(eval::evaluate_image(scene_img({{Shape::Square, Colour::Red, 16, 16, 5}}), red_circle));
  // wrong count
  const EvalPrompt three{"three green triangles", Category::Counting, false};
  const Object t1{Shape::Triangle, Colour::Green, 8, 9, 4}, t2{Shape::Triangle, Colour::Green, 24, 9, 4},
      t3{Shape::Triangle, Colour::Green, 16, 24, 4}, t4{Shape::Triangle, Colour::Green, 26, 25, 3.6};
  CHECK(eval::evaluate_image(scene_img({t1, t2, t3}), three));
  CHECK_FALSE(eval::evaluate_image(scene_img({t1, t2}), three));
  CHECK_FALSE(eval::evaluate_image(scene_img({t1, t2, t3, t4}), three));
  // wrong relation
  const EvalPrompt above{"a red circle above a blue square", Category::Position, false};
  const Object top_circle{Shape::Circle, Colour::Red, 16, 7, 4.5}, low_square{Shape::Square, Colour::Blue, 16, 25, 4.5};
  CHECK(eval::evaluate_image(scene_img({top_circle, low_square}), above));
  Object low_circle = top_circle, top_square = low_square;
  low_circle.cy = 25, top_square.cy = 7;
  CHECK_FALSE(eval::evaluate_image(scene_img({low_circle, top_square}), above));
  // side by side: no vertical margin
  CHECK_FALSE(eval::evaluate_image(scene_img({{Shape::Circle, Colour::Red, 8, 16, 4.5}, {Shape::Square, Colour::Blue, 24, 16, 4.5}}), above));
  // swapped colours fail attribution, but pass the lenient two-object check
  const EvalPrompt attr{"a red circle and a blue square", Category::ColorAttr, false};
  const EvalPrompt two{"a red circle and a blue square", Category::TwoObject, false};
  const auto swapped = scene_img({{Shape::Circle, Colour::Blue, 8, 16, 4.5}, {Shape::Square, Colour::Red, 24, 16, 4.5}});
  CHECK_FALSE(eval::evaluate_image(swapped, attr));
  CHECK_FALSE(eval::evaluate_image(swapped, two));  // strict mode checks every named colour
  eval::ShapesEvalOptions lenient;
  lenient.strict = false;
  CHECK(eval::evaluate_image(swapped, two, lenient));
  CHECK_FALSE(eval::evaluate_image(swapped, attr, lenient));
}

TEST_CASE("the stored evaluation prompt set is the generated one, balanced, with held-out prompts marked", "[shapes]") {
  // data/shapes_eval_prompts.json in the repository (DIFFUSE_SOURCE_DIR from CMake).
  std::ifstream in(std::string(DIFFUSE_SOURCE_DIR) + "/data/shapes_eval_prompts.json");
  REQUIRE(in.good());
  const auto stored = eval_prompts_from_json(nlohmann::json::parse(in), "shapes_eval_prompts.json");
  const auto generated = make_eval_prompts();
  REQUIRE(stored.size() == generated.size());
  CHECK(stored.size() == 300);
  std::map<std::string, int> per_cat, held;
  for (std::size_t i = 0; i < stored.size(); ++i) {
    CHECK(stored[i].prompt == generated[i].prompt);
    CHECK(stored[i].held_out == is_held_out(parse_caption(stored[i].prompt)));
    ++per_cat[std::string(name(stored[i].category))];
    held[std::string(name(stored[i].category))] += stored[i].held_out;
  }
  for (auto c : all_categories) {
    CHECK(per_cat[std::string(name(c))] == 50);
    CHECK(held[std::string(name(c))] == 10);
  }
}

}  // namespace t_shapes
