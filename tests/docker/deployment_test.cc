// Checks the container and Kubernetes files (docker/) against the repository and the build, as
// far as that is possible without a container engine: every path they copy or mount exists or is
// made by the named script, every binary they copy is built, the runtime images install every
// shared library the binaries load (dpkg), ports and TLS files agree with the mounted configs
// (loaded by the real loaders), and every container runs as a non-root user.
#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "mlink/cloud/options.h"
#include "mlink/edge/options.h"

namespace mlink {
namespace {

namespace fs = std::filesystem;

const fs::path kRoot = MLINK_SOURCE_DIR;
const fs::path kDocker = kRoot / "docker";

std::string ReadText(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::vector<std::string> Words(const std::string& s) {
  std::istringstream in(s);
  std::vector<std::string> out;
  for (std::string w; in >> w;) out.push_back(w);
  return out;
}

std::string RunCommand(const std::string& cmd) {
  std::string out;
  std::unique_ptr<FILE, int (*)(FILE*)> pipe(popen(cmd.c_str(), "r"), pclose);
  if (!pipe) return out;
  char buf[4096];
  while (std::size_t n = fread(buf, 1, sizeof(buf), pipe.get())) out.append(buf, n);
  return out;
}

// ------------------------------------------------------------------------------- Dockerfile

struct Stage {
  std::string name, base;
  std::vector<std::pair<std::string, std::string>> instructions;  // keyword, arguments
  std::vector<std::string> Args(const std::string& keyword) const {
    std::vector<std::string> out;
    for (const auto& [k, a] : instructions)
      if (k == keyword) out.push_back(a);
    return out;
  }
  std::set<std::string> AptPackages() const {
    std::set<std::string> out;
    for (const std::string& run : Args("RUN")) {
      std::size_t at = run.find("apt-get install");
      if (at == std::string::npos) continue;
      std::string rest = run.substr(at);
      rest = rest.substr(0, rest.find("&&"));
      for (const std::string& w : Words(rest))
        if (w != "apt-get" && w != "install" && w[0] != '-') out.insert(w);
    }
    return out;
  }
};

std::map<std::string, Stage> ParseDockerfile(const fs::path& path) {
  std::map<std::string, Stage> stages;
  std::istringstream in(ReadText(path));
  std::string line, logical;
  Stage* current = nullptr;
  while (std::getline(in, line)) {
    if (!line.empty() && line[0] == '#') continue;
    const bool more = !line.empty() && line.back() == '\\';
    logical += more ? line.substr(0, line.size() - 1) + " " : line;
    if (more) continue;
    std::vector<std::string> w = Words(logical);
    if (!w.empty()) {
      const std::string args = logical.substr(logical.find(w[0]) + w[0].size());
      if (w[0] == "FROM") {
        EXPECT_EQ(w.size(), 4u) << "every stage is named: " << logical;
        Stage s;
        s.base = w[1];
        s.name = w.size() == 4 ? w[3] : w[1];
        current = &(stages[s.name] = s);
      } else if (current != nullptr) {
        current->instructions.emplace_back(w[0], args);
      }
    }
    logical.clear();
  }
  return stages;
}

// The stages a stage builds on (FROM another stage), itself first.
std::vector<const Stage*> Chain(const std::map<std::string, Stage>& stages, const std::string& name) {
  std::vector<const Stage*> out;
  for (auto it = stages.find(name); it != stages.end(); it = stages.find(it->second.base)) out.push_back(&it->second);
  return out;
}

TEST(DeploymentTest, DockerfileCopiesOnlyExistingSourcesTheContextKeeps) {
  const auto stages = ParseDockerfile(kDocker / "Dockerfile");
  ASSERT_TRUE(stages.count("build") && stages.count("cloud") && stages.count("edge"));
  // .dockerignore drops everything but the listed paths.
  std::set<std::string> kept;
  for (const std::string& l : Words(ReadText(kRoot / ".dockerignore"))) {
    if (l[0] == '!') kept.insert(l.back() == '/' ? l.substr(1, l.size() - 2) : l.substr(1));
  }
  std::set<std::string> copied_dirs;
  int copies = 0;
  for (const auto& [name, stage] : stages) {
    for (const std::string& args : stage.Args("COPY")) {
      std::vector<std::string> w = Words(args);
      if (w[0].rfind("--from=", 0) == 0) continue;
      for (std::size_t i = 0; i + 1 < w.size(); ++i) {
        ++copies;
        EXPECT_TRUE(fs::exists(kRoot / w[i])) << "COPY source " << w[i] << " is not in the repository";
        EXPECT_TRUE(kept.count(w[i])) << "COPY source " << w[i] << " is excluded by .dockerignore";
        copied_dirs.insert(w[i]);
      }
    }
  }
  EXPECT_GE(copies, 7);
  // Every source folder the top-level CMakeLists.txt adds is copied (tests and bench are off).
  std::regex sub(R"(add_subdirectory\((\w+)\))");
  const std::string cmake = ReadText(kRoot / "CMakeLists.txt");
  int subdirs = 0;
  for (std::sregex_iterator it(cmake.begin(), cmake.end(), sub), end; it != end; ++it) {
    const std::string dir = (*it)[1];
    if (dir == "tests" || dir == "bench") continue;
    ++subdirs;
    EXPECT_TRUE(copied_dirs.count(dir)) << "the build stage does not copy " << dir << "/";
  }
  EXPECT_EQ(subdirs, 5);
  const std::string entry = kDocker / "entrypoint.sh";
  EXPECT_TRUE((fs::status(entry).permissions() & fs::perms::owner_exec) != fs::perms::none);
}

TEST(DeploymentTest, RuntimeImagesRunBuiltBinariesAsNonRoot) {
  const auto stages = ParseDockerfile(kDocker / "Dockerfile");
  const std::string build_cmds = [&] {
    std::string all;
    for (const std::string& r : stages.at("build").Args("RUN")) all += r;
    return all;
  }();
  const std::map<std::string, fs::path> built = {{"cloud", MLINK_CLOUD_BIN}, {"edge", MLINK_EDGE_BIN}};
  for (const auto& [target, bin] : built) {
    SCOPED_TRACE(target);
    const std::string name = bin.filename().string();
    ASSERT_TRUE(fs::exists(bin)) << bin;
    EXPECT_NE(build_cmds.find(name), std::string::npos) << "the build stage does not build " << name;
    const Stage& stage = stages.at(target);
    std::vector<std::string> copies = stage.Args("COPY");
    bool copied = false;
    for (const std::string& c : copies) {
      std::vector<std::string> w = Words(c);
      copied = copied || (w.size() == 3 && w[0] == "--from=build" && w[1] == "/src/build/bin/" + name &&
                          w[2] == "/usr/local/bin/" + name);
    }
    EXPECT_TRUE(copied) << "the " << target << " stage does not copy build/bin/" << name;
    std::vector<std::string> users = stage.Args("USER");
    ASSERT_FALSE(users.empty());
    const std::string user = Words(users.back())[0];
    EXPECT_EQ(user, "10001:10001");
    const std::string entry = Words(stage.Args("ENTRYPOINT").back())[0] + Words(stage.Args("ENTRYPOINT").back())[1];
    EXPECT_EQ(entry, "[\"/usr/local/bin/mlink-entrypoint\",\"" + name + "\"]");
  }
  // The user exists in the shared base with that uid.
  const std::string base_run = stages.at("runtime-base").Args("RUN").front();
  EXPECT_NE(base_run.find("--uid 10001"), std::string::npos);
  // The cloud image exposes exactly the ports its config serves.
  auto cloud = cloud::LoadCloudOptions((kDocker / "configs/cloud.yaml").string());
  ASSERT_TRUE(cloud.ok()) << cloud.status().ToString();
  std::vector<std::string> expose = Words(stages.at("cloud").Args("EXPOSE").front());
  EXPECT_EQ(std::set<std::string>(expose.begin(), expose.end()),
            (std::set<std::string>{std::to_string(cloud->port), std::to_string(cloud->http_port)}));
}

TEST(DeploymentTest, RuntimeImagesInstallEveryLibraryTheBinariesLoad) {
  const auto stages = ParseDockerfile(kDocker / "Dockerfile");
  // In debian:12-slim already (essential packages and apt's own dependencies).
  const std::set<std::string> in_base = {"libc6", "libgcc-s1", "libstdc++6"};
  const std::map<std::string, fs::path> built = {{"cloud", MLINK_CLOUD_BIN}, {"edge", MLINK_EDGE_BIN}};
  for (const auto& [target, bin] : built) {
    SCOPED_TRACE(target);
    std::set<std::string> installed = in_base;
    for (const Stage* s : Chain(stages, target)) {
      for (const std::string& p : s->AptPackages()) installed.insert(p);
    }
    std::map<std::string, std::string> resolved;  // soname -> path, from ldd
    std::istringstream ldd(RunCommand("ldd '" + bin.string() + "'"));
    for (std::string line; std::getline(ldd, line);) {
      std::vector<std::string> w = Words(line);
      if (w.size() >= 3 && w[1] == "=>") resolved[w[0]] = w[2];
    }
    // dpkg knows a library by the path its package installed, which under Debian's merged /usr
    // may be the /lib spelling of what ldd prints: ask for every spelling in one dpkg call.
    std::vector<std::pair<std::string, std::vector<std::string>>> needed;  // soname, paths
    std::string query = "dpkg -S";
    std::istringstream objdump(RunCommand("objdump -p '" + bin.string() + "'"));
    for (std::string line; std::getline(objdump, line);) {
      std::vector<std::string> w = Words(line);
      if (w.size() != 2 || w[0] != "NEEDED") continue;
      ASSERT_TRUE(resolved.count(w[1])) << w[1] << " not resolved by ldd";
      const std::string real = fs::canonical(resolved[w[1]]).string();
      std::vector<std::string> paths = {resolved[w[1]], real};
      if (real.rfind("/usr/", 0) == 0) paths.push_back(real.substr(4));
      for (const std::string& p : paths) query += " '" + p + "'";
      needed.emplace_back(w[1], paths);
    }
    std::map<std::string, std::string> owner_of;  // path -> package
    std::istringstream owners(RunCommand(query + " 2>/dev/null"));
    for (std::string line; std::getline(owners, line);) {
      const std::size_t colon = line.find(": ");
      if (colon == std::string::npos) continue;
      owner_of[line.substr(colon + 2)] = line.substr(0, line.substr(0, colon).find(':'));
    }
    const int libs = static_cast<int>(needed.size());
    for (const auto& [soname, paths] : needed) {
      std::string owner;
      for (const std::string& p : paths)
        if (owner.empty() && owner_of.count(p)) owner = owner_of[p];
      EXPECT_FALSE(owner.empty()) << soname << " (" << paths[1] << ") belongs to no Debian package";
      EXPECT_TRUE(installed.count(owner)) << "the " << target << " image does not install " << owner
                                          << ", which provides " << soname;
    }
    EXPECT_GE(libs, 5);
  }
}

// ------------------------------------------------------------------------------- compose

// "${VAR:-default}" -> default.
std::string Defaulted(const std::string& s) {
  return std::regex_replace(s, std::regex(R"(\$\{\w+:-([^}]*)\})"), "$1");
}

// yaml-cpp does not apply YAML merge keys ("<<: *edge"); compose does. Keys given beside "<<" win.
YAML::Node WithMergeKeys(const YAML::Node& n) {
  YAML::Node out(YAML::NodeType::Map);
  if (n["<<"]) {
    for (auto it = n["<<"].begin(); it != n["<<"].end(); ++it) out[it->first.as<std::string>()] = it->second;
  }
  for (auto it = n.begin(); it != n.end(); ++it) {
    if (it->first.as<std::string>() != "<<") out[it->first.as<std::string>()] = it->second;
  }
  return out;
}

struct Mount {
  fs::path host;
  std::string target;
  bool read_only = false;
};

// True if `file` (a path inside the container) lies under a mount target.
bool Covered(const std::vector<Mount>& mounts, const std::string& file, bool writable = false) {
  for (const Mount& m : mounts) {
    if ((file == m.target || file.rfind(m.target + "/", 0) == 0) && (!writable || !m.read_only)) return true;
  }
  return false;
}

TEST(DeploymentTest, ComposeMountsExistingConfigsAndAgreesWithThem) {
  YAML::Node compose = YAML::LoadFile((kDocker / "compose.yaml").string());
  YAML::Node services = compose["services"];
  ASSERT_TRUE(services.IsMap());
  ASSERT_EQ(services.size(), 4u);
  const std::string prepare = ReadText(kDocker / "prepare");
  const std::string setup = ReadText(kRoot / "scripts/setup");
  auto cloud_opts = cloud::LoadCloudOptions((kDocker / "configs/cloud.yaml").string());
  ASSERT_TRUE(cloud_opts.ok()) << cloud_opts.status().ToString();
  const auto stages = ParseDockerfile(kDocker / "Dockerfile");
  int edges = 0;
  for (auto it = services.begin(); it != services.end(); ++it) {
    const std::string name = it->first.as<std::string>();
    YAML::Node s = WithMergeKeys(it->second);
    SCOPED_TRACE(name);
    const std::string uid = Defaulted(s["user"].as<std::string>());
    EXPECT_EQ(uid, "10001:10001");
    EXPECT_NE(uid.substr(0, uid.find(':')), "0");
    EXPECT_TRUE(stages.count(s["build"]["target"].as<std::string>()));
    EXPECT_TRUE(fs::exists(kDocker / s["build"]["context"].as<std::string>() / s["build"]["dockerfile"].as<std::string>()));
    EXPECT_EQ(s["networks"][0].as<std::string>(), "mlink");
    EXPECT_TRUE(compose["networks"]["mlink"].IsDefined());
    std::vector<Mount> mounts;
    fs::path config;
    for (const YAML::Node& v : s["volumes"]) {
      std::vector<std::string> parts;
      std::stringstream ss(v.as<std::string>());
      for (std::string p; std::getline(ss, p, ':');) parts.push_back(p);
      ASSERT_GE(parts.size(), 2u);
      Mount m{(kDocker / parts[0]).lexically_normal(), parts[1], parts.size() > 2 && parts[2] == "ro"};
      const std::string rel = m.host.lexically_relative(kRoot).string();
      if (rel.rfind("run/docker/certs/", 0) == 0) {
        // Made by docker/prepare (scripts/gen-certs): ca.pem, cloud.*, and one pair per site it names.
        const std::string file = m.host.filename().string(), stem = m.host.stem().string();
        EXPECT_TRUE(file == "ca.pem" || stem == "cloud" || prepare.find(" " + stem) != std::string::npos) << rel;
        EXPECT_TRUE(m.read_only) << rel;
      } else if (rel.rfind("run/docker/data/", 0) == 0) {
        EXPECT_NE(prepare.find("$out/data/" + m.host.filename().string()), std::string::npos) << rel << " is not made by docker/prepare";
      } else if (rel == "run/videos") {
        EXPECT_NE(setup.find("\"$root/run/videos\""), std::string::npos);
        EXPECT_TRUE(m.read_only);
      } else {
        EXPECT_TRUE(fs::exists(m.host)) << rel << " does not exist";
      }
      if (m.target == "/etc/mlink/config.yaml") config = m.host;
      mounts.push_back(m);
    }
    ASSERT_FALSE(config.empty()) << "no config mounted at /etc/mlink/config.yaml";
    for (const std::string& f : Words(s["environment"]["MLINK_REQUIRED_FILES"].as<std::string>())) {
      EXPECT_TRUE(Covered(mounts, f)) << f << " is required by the entrypoint but not mounted";
    }
    if (name == "mlink-cloud") {
      auto o = cloud::LoadCloudOptions(config.string());
      ASSERT_TRUE(o.ok()) << o.status().ToString();
      for (const std::string& f : {o->ca_file, o->cert_file, o->key_file}) EXPECT_TRUE(Covered(mounts, f)) << f;
      EXPECT_TRUE(Covered(mounts, o->data_dir, true)) << o->data_dir;
      EXPECT_EQ(o->listen_host, "0.0.0.0");
      EXPECT_EQ(s["expose"][0].as<std::string>(), std::to_string(o->port));
      EXPECT_EQ(s["ports"][0].as<std::string>(), "127.0.0.1:" + std::to_string(o->http_port) + ":" + std::to_string(o->http_port));
      EXPECT_NE(s["healthcheck"]["test"][3].as<std::string>().find("/" + std::to_string(o->http_port) + " "), std::string::npos);
    } else {
      ++edges;
      auto o = edge::LoadEdgeOptions(config.string());
      ASSERT_TRUE(o.ok()) << o.status().ToString();
      for (const std::string& f : {o->ca_file, o->cert_file, o->key_file, o->source.uri}) EXPECT_TRUE(Covered(mounts, f)) << f;
      EXPECT_TRUE(Covered(mounts, o->data_dir, true)) << o->data_dir;
      EXPECT_TRUE(Covered(mounts, o->serving.sink, true)) << o->serving.sink;
      EXPECT_NE(setup.find(fs::path(o->source.uri).filename().string()), std::string::npos) << "scripts/setup does not fetch " << o->source.uri;
      EXPECT_EQ(fs::path(o->cert_file).stem().string(), o->site) << "the certificate's CN is the site's identity";
      EXPECT_EQ(o->cloud.host, "mlink-cloud");
      EXPECT_TRUE(services[o->cloud.host].IsDefined());
      EXPECT_EQ(o->cloud.port, cloud_opts->port);
      EXPECT_EQ(s["depends_on"]["mlink-cloud"]["condition"].as<std::string>(), "service_healthy");
      bool federated = false;
      for (const auto& fl : o->learning.federation.links) {
        for (const auto& cl : cloud_opts->links) federated = federated || (cl.id == fl.id && (cl.allowed_edges.empty() ||
                                   std::count(cl.allowed_edges.begin(), cl.allowed_edges.end(), o->site)));
      }
      EXPECT_TRUE(federated) << "the site federates no link the aggregator allows it";
    }
  }
  EXPECT_EQ(edges, 3);
}

// ------------------------------------------------------------------------------- Kubernetes

TEST(DeploymentTest, KubernetesManifestsReferenceWhatExistsAndRunAsNonRoot) {
  YAML::Node kust = YAML::LoadFile((kDocker / "kustomization.yaml").string());
  std::map<std::string, fs::path> config_maps;  // name -> config file
  for (const YAML::Node& g : kust["configMapGenerator"]) {
    const std::string file = g["files"][0].as<std::string>();
    ASSERT_EQ(file.rfind("config.yaml=", 0), 0u);
    config_maps[g["name"].as<std::string>()] = kDocker / file.substr(12);
    EXPECT_TRUE(fs::exists(config_maps[g["name"].as<std::string>()])) << file;
  }
  std::map<std::string, YAML::Node> by_kind_name;
  for (const YAML::Node& r : kust["resources"]) {
    const fs::path p = kDocker / r.as<std::string>();
    ASSERT_TRUE(fs::exists(p)) << p;
    for (const YAML::Node& doc : YAML::LoadAllFromFile(p.string())) {
      by_kind_name[doc["kind"].as<std::string>() + "/" + doc["metadata"]["name"].as<std::string>()] = doc;
    }
  }
  ASSERT_TRUE(by_kind_name.count("Service/mlink-cloud"));
  ASSERT_TRUE(by_kind_name.count("PersistentVolumeClaim/mlink-cloud-data"));
  auto cloud_opts = cloud::LoadCloudOptions(config_maps.at("mlink-cloud-config").string());
  ASSERT_TRUE(cloud_opts.ok()) << cloud_opts.status().ToString();
  std::map<std::string, int> service_ports;
  for (const YAML::Node& p : by_kind_name["Service/mlink-cloud"]["spec"]["ports"]) service_ports[p["name"].as<std::string>()] = p["port"].as<int>();
  EXPECT_EQ(service_ports["federation"], cloud_opts->port);
  EXPECT_EQ(service_ports["http"], cloud_opts->http_port);
  int deployments = 0, edges = 0;
  for (const auto& [key, doc] : by_kind_name) {
    if (doc["kind"].as<std::string>() != "Deployment") continue;
    SCOPED_TRACE(key);
    ++deployments;
    YAML::Node pod = doc["spec"]["template"]["spec"];
    EXPECT_TRUE(pod["securityContext"]["runAsNonRoot"].as<bool>());
    EXPECT_EQ(pod["securityContext"]["runAsUser"].as<int>(), 10001);
    EXPECT_EQ(doc["spec"]["replicas"].as<int>(), 1);
    EXPECT_EQ(doc["spec"]["strategy"]["type"].as<std::string>(), "Recreate");
    std::map<std::string, YAML::Node> volumes;
    for (const YAML::Node& v : pod["volumes"]) volumes[v["name"].as<std::string>()] = v;
    ASSERT_EQ(pod["containers"].size(), 1u);
    YAML::Node c = pod["containers"][0];
    const std::string image = c["image"].as<std::string>();
    EXPECT_TRUE(image == "mlink-cloud:latest" || image == "mlink-edge:latest") << image;
    EXPECT_FALSE(c["securityContext"]["allowPrivilegeEscalation"].as<bool>());
    std::vector<Mount> mounts;
    fs::path config;
    for (const YAML::Node& m : c["volumeMounts"]) {
      const std::string vol = m["name"].as<std::string>();
      ASSERT_TRUE(volumes.count(vol)) << "mount of undeclared volume " << vol;
      YAML::Node v = volumes[vol];
      if (v["configMap"]) {
        const std::string cm = v["configMap"]["name"].as<std::string>();
        ASSERT_TRUE(config_maps.count(cm)) << cm << " is not generated by kustomization.yaml";
        EXPECT_EQ(m["mountPath"].as<std::string>(), "/etc/mlink/config.yaml");
        config = config_maps[cm];
      } else if (v["persistentVolumeClaim"]) {
        EXPECT_TRUE(by_kind_name.count("PersistentVolumeClaim/" + v["persistentVolumeClaim"]["claimName"].as<std::string>()));
      } else if (v["secret"]) {
        EXPECT_TRUE(m["readOnly"].as<bool>());
      }
      mounts.push_back(Mount{{}, m["mountPath"].as<std::string>(), m["readOnly"] && m["readOnly"].as<bool>()});
    }
    ASSERT_FALSE(config.empty());
    for (const std::string& f : Words(c["env"][0]["value"].as<std::string>())) EXPECT_TRUE(Covered(mounts, f)) << f;
    if (image == "mlink-cloud:latest") {
      auto o = cloud::LoadCloudOptions(config.string());
      ASSERT_TRUE(o.ok());
      for (const std::string& f : {o->ca_file, o->cert_file, o->key_file}) EXPECT_TRUE(Covered(mounts, f)) << f;
      EXPECT_TRUE(Covered(mounts, o->data_dir, true));
      std::map<std::string, int> ports;
      for (const YAML::Node& p : c["ports"]) ports[p["name"].as<std::string>()] = p["containerPort"].as<int>();
      EXPECT_EQ(ports["federation"], o->port);
      EXPECT_EQ(ports["http"], o->http_port);
    } else {
      ++edges;
      auto o = edge::LoadEdgeOptions(config.string());
      ASSERT_TRUE(o.ok());
      for (const std::string& f : {o->ca_file, o->cert_file, o->key_file, o->source.uri}) EXPECT_TRUE(Covered(mounts, f)) << f;
      EXPECT_TRUE(Covered(mounts, o->data_dir, true));
      EXPECT_TRUE(by_kind_name.count("Service/" + o->cloud.host)) << o->cloud.host;
      EXPECT_EQ(o->cloud.port, service_ports["federation"]);
      EXPECT_EQ(doc["metadata"]["name"].as<std::string>(), "mlink-edge-" + o->site);
    }
  }
  EXPECT_EQ(deployments, 4);
  EXPECT_EQ(edges, 3);
}

// ------------------------------------------------------------------------------- linters

// Debian's yamllint and docker-compose (v1) validate without a container engine.
TEST(DeploymentTest, YamllintAndComposeAcceptTheFiles) {
  const std::string docker = kDocker.string();
  const std::string lint = RunCommand("yamllint -f parsable -d relaxed '" + docker + "' 2>&1; echo \"exit=$?\"");
  EXPECT_NE(lint.find("exit=0"), std::string::npos) << lint;
  EXPECT_EQ(lint.find("[error]"), std::string::npos) << lint;
  const std::string config = RunCommand("cd '" + docker + "' && env -u MLINK_UID -u MLINK_GID docker-compose -f compose.yaml config 2>&1; echo \"exit=$?\"");
  EXPECT_NE(config.find("exit=0"), std::string::npos) << config;
  // The resolved file: the three sites inherit the non-root user and the network from x-edge.
  std::size_t users = 0;
  for (std::size_t at = config.find("user: 10001:10001"); at != std::string::npos; at = config.find("user: 10001:10001", at + 1)) ++users;
  EXPECT_EQ(users, 4u) << config;
}

}  // namespace
}  // namespace mlink
