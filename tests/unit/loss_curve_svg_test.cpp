// The loss-curve SVG: well-formed, both series drawn, values inside the plot area.
#include <regex>

#include "test_util.h"
#include "vacc/runtime/loss_curve_svg.h"

namespace vacc::test {
namespace {

TEST(LossCurveSvg, DrawsBothSeriesInsideThePlot) {
  LossCurve c;
  for (int s = 1; s <= 50; ++s) c.train.push_back({double(s), 10.0 / s});
  c.eval = {{10, 1.5}, {50, 0.4}};
  std::string svg = render_loss_curve_svg(c, "run <1>");
  EXPECT_EQ(svg.rfind("<svg", 0), 0u);
  EXPECT_NE(svg.find("</svg>"), std::string::npos);
  EXPECT_NE(svg.find("run &lt;1&gt;"), std::string::npos) << "title escaped";
  EXPECT_EQ(std::count(svg.begin(), svg.end(), '\n') > 10, true);
  std::smatch m;
  std::string rest = svg;
  int polylines = 0;
  std::regex points("points=\"([^\"]*)\"");
  while (std::regex_search(rest, m, points)) {
    ++polylines;
    std::istringstream in(m[1].str());
    std::string pt;
    while (in >> pt) {
      double x = std::stod(pt.substr(0, pt.find(','))), y = std::stod(pt.substr(pt.find(',') + 1));
      EXPECT_GE(x, 70.0);
      EXPECT_LE(x, 700.0);
      EXPECT_GE(y, 40.0);
      EXPECT_LE(y, 370.0);
    }
    rest = m.suffix();
  }
  EXPECT_EQ(polylines, 2);
}

TEST(LossCurveSvg, SurvivesDegenerateInput) {
  LossCurve c;
  EXPECT_NE(render_loss_curve_svg(c, "empty").find("</svg>"), std::string::npos);
  c.train = {{1, 2.0}};
  EXPECT_NE(render_loss_curve_svg(c, "one point").find("</svg>"), std::string::npos);
  c.train = {{1, 2.0}, {2, std::nan("")}};
  EXPECT_EQ(render_loss_curve_svg(c, "with a gap").find("nan"), std::string::npos);
}

}  // namespace
}  // namespace vacc::test
