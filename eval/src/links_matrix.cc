#include "mlink/eval/links_matrix.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <limits>
#include <sstream>

#include "mlink/common/log.h"
#include "mlink/eval/fmnist.h"
#include "mlink/link/batched.h"

namespace mlink::eval {

namespace {

FashionMnist Slice(const FashionMnist& d, int start, int count) {
  FashionMnist s;
  s.rows = count;
  s.pixels.assign(d.pixels.begin() + std::size_t(start) * 784,
                  d.pixels.begin() + std::size_t(start + count) * 784);
  s.labels.assign(d.labels.begin() + start, d.labels.begin() + start + count);
  return s;
}

}  // namespace

Result<LinksMatrix> RunLinksMatrix(const LinksMatrixOptions& o) {
  const std::string dir = o.fmnist_dir.empty() ? DefaultFashionMnistDir() : o.fmnist_dir;
  MLINK_ASSIGN_OR_RETURN(auto train, LoadFashionMnist(dir, true));
  MLINK_ASSIGN_OR_RETURN(auto test, LoadFashionMnist(dir, false, o.test_rows));
  if (o.model_rows < 100 || o.link_rows < 10 || o.model_rows + o.link_rows > train.rows) {
    return Status::InvalidArgument("links matrix: model_rows (" + std::to_string(o.model_rows) +
                                   ") + link_rows (" + std::to_string(o.link_rows) +
                                   ") must fit the " + std::to_string(train.rows) +
                                   " training images (model_rows >= 100, link_rows >= 10)");
  }
  MLOG_INFO("eval", "training the model zoo").Kv("images", o.model_rows);
  MLINK_ASSIGN_OR_RETURN(auto zoo, TrainZoo(Slice(train, 0, o.model_rows), o.seed));
  auto link_outputs = zoo.Run(Slice(train, o.model_rows, o.link_rows));
  auto test_outputs = zoo.Run(test);

  std::vector<link::ModelOutputSpec> specs;
  for (const auto& m : zoo.models) specs.push_back(m.spec);
  link::PairwiseOptions opts;
  opts.train.epochs = o.epochs;
  opts.train.seed = o.seed;
  opts.threads = o.threads;
  opts.progress = [](const std::string& arch, int links, int epoch, int epochs, double loss) {
    if (epoch == 1 || epoch % 10 == 0 || epoch == epochs) {
      MLOG_INFO("eval", "training links")
          .Kv("arch", arch)
          .Kv("links", links)
          .Kv("epoch", epoch)
          .Kv("of", epochs)
          .Kv("loss", loss);
    }
  };
  const std::size_t k = specs.size();
  MLOG_INFO("eval", "training pairwise links")
      .Kv("links", k * (k - 1))
      .Kv("rows", o.link_rows)
      .Kv("epochs", o.epochs);
  const auto t1 = std::chrono::steady_clock::now();
  MLINK_ASSIGN_OR_RETURN(auto links, link::TrainPairwise(specs, link_outputs, opts));
  LinksMatrix m;
  m.train_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count();
  m.link_rows = o.link_rows;
  m.test_rows = test.rows;
  m.epochs = o.epochs;
  for (const auto& z : zoo.models) m.models.push_back(z.name);
  // The zoo's models in order (fmnist.h): classifier, group, attributes, ink, box, caption,
  // caption14.
  const char* metric_names[] = {"accuracy", "accuracy", "mAP", "1 - MAE/MAD", "IoU", "WER", "WER"};
  for (std::size_t j = 0; j < k; ++j) {
    m.metrics.push_back(j < 7 ? metric_names[j] : "p");
    m.higher_is_better.push_back(m.metrics.back() != "WER");
  }
  m.value.assign(k, std::vector<double>(k, std::numeric_limits<double>::quiet_NaN()));
  for (const auto& r : links) {
    MLINK_ASSIGN_OR_RETURN(auto ev,
                           r.link->Evaluate(test_outputs[r.source], test_outputs[r.target]));
    m.value[r.target][r.source] = ev.metric;
  }
  return m;
}

std::string LinksMarkdown(const LinksMatrix& m) {
  std::ostringstream md;
  const std::size_t k = m.models.size();
  md << "Rows: target model (metric); columns: source model. " << m.link_rows << " training rows, "
     << m.test_rows << " test images, " << m.epochs
     << " epochs max, RMSprop lr 0.01, batch 32.\n\n| target \\ source |";
  for (const auto& name : m.models) md << " " << name << " |";
  md << "\n|---|";
  for (std::size_t i = 0; i < k; ++i) md << "---|";
  md << "\n";
  char buf[64];
  for (std::size_t j = 0; j < k; ++j) {
    md << "| " << m.models[j] << " (" << m.metrics[j] << ") |";
    for (std::size_t i = 0; i < k; ++i) {
      if (std::isnan(m.value[j][i])) {
        md << " - |";
        continue;
      }
      std::snprintf(buf, sizeof(buf), " %.3f |", m.value[j][i]);
      md << buf;
    }
    md << "\n";
  }
  std::snprintf(buf, sizeof(buf), "%.1f", m.train_seconds);
  md << "\nAll " << k * (k - 1) << " links trained together (TrainPairwise, one group per architecture) in " << buf
     << " s.\n";
  return md.str();
}

}  // namespace mlink::eval
