"""Docker's reference grammar, with cases ported from distribution/reference
(reference_test.go TestReferenceParse, normalize_test.go TestValidateReferenceName,
TestValidateRemoteName, TestParseRepositoryInfo, TestParseReferenceWithTagAndDigest)."""
import pytest

from swarm.api.reference import InvalidReference, parse, parse_image, parse_normalized

F64 = "sha256:" + "f" * 64


@pytest.mark.parametrize("text,domain,name,tag,digest", [
    ("test_com", "", "test_com", None, None),
    ("test.com:tag", "", "test.com", "tag", None),
    ("test.com:5000", "", "test.com", "5000", None),
    ("test.com/repo:tag", "test.com", "test.com/repo", "tag", None),
    ("test:5000/repo", "test:5000", "test:5000/repo", None, None),
    ("test:5000/repo:tag", "test:5000", "test:5000/repo", "tag", None),
    (f"test:5000/repo@{F64}", "test:5000", "test:5000/repo", None, F64),
    (f"test:5000/repo:tag@{F64}", "test:5000", "test:5000/repo", "tag", F64),
    ("lowercase:Uppercase", "", "lowercase", "Uppercase", None),
    ("a/" * 127 + "a:tag-puts-this-over-max", "a", "a/" * 127 + "a", "tag-puts-this-over-max", None),
    ("sub-dom1.foo.com/bar/baz/quux:some-long-tag", "sub-dom1.foo.com", "sub-dom1.foo.com/bar/baz/quux",
     "some-long-tag", None),
    ("b.gcr.io/test.example.com/my-app:test.example.com", "b.gcr.io", "b.gcr.io/test.example.com/my-app",
     "test.example.com", None),
    (f"xn--7o8h.com/myimage:xn--7o8h.com@{F64}", "xn--7o8h.com", "xn--7o8h.com/myimage", "xn--7o8h.com", F64),
    ("foo_bar.com:8080", "", "foo_bar.com", "8080", None),
    ("foo/foo_bar.com:8080", "foo", "foo/foo_bar.com", "8080", None),
    ("192.168.1.1", "", "192.168.1.1", None, None),
    ("192.168.1.1:5000", "", "192.168.1.1", "5000", None),
    ("192.168.1.1:5000/repo:5050", "192.168.1.1:5000", "192.168.1.1:5000/repo", "5050", None),
    ("[2001:db8::1]/repo", "[2001:db8::1]", "[2001:db8::1]/repo", None, None),
    (f"[2001:db8::1]:5000/repo:tag@{F64}", "[2001:db8::1]:5000", "[2001:db8::1]:5000/repo", "tag", F64),
    ("[::1]:5000/repo", "[::1]:5000", "[::1]:5000/repo", None, None),
    ("example.com/" + "a" * 255 + ":tag", "example.com", "example.com/" + "a" * 255, "tag", None),
])
def test_parse_valid(text, domain, name, tag, digest):
    ref = parse(text)
    assert (ref.domain, ref.name, ref.tag, ref.digest) == (domain, name, tag, digest)
    assert str(ref) == text


@pytest.mark.parametrize("text,message", [
    ("", "invalid reference format: repository name must have at least one component"),
    (":justtag", "invalid reference format"),
    (f"@{F64}", "invalid reference format"),
    ("repo@sha256:" + "f" * 34, "invalid reference format: invalid checksum digest length"),
    ("validname@invaliddigest:" + "f" * 64, "invalid reference format: unsupported digest algorithm"),
    ("validname@sha512:" + "f" * 128, "invalid reference format: unsupported digest algorithm"),
    ("Uppercase:tag", "invalid reference format: repository name must be lowercase"),
    ("test:5000/Uppercase/lowercase:tag", "invalid reference format: repository name must be lowercase"),
    ("domain/" + "a" * 256 + ":tag", "invalid reference format: repository name must not be more than 255"),
    ("aa/asdf$$^/aa", "invalid reference format"),
    ("[2001:db8::1]", "invalid reference format"),
    ("[2001:db8::1]:5000", "invalid reference format"),
    ("[fe80::1%eth0]:5000/repo", "invalid reference format"),
])
def test_parse_invalid(text, message):
    with pytest.raises(InvalidReference) as err:
        parse(text)
    assert str(err.value).startswith(message)
    assert "\n" not in str(err.value)


VALID_NAMES = [
    "docker/docker", "library/debian", "debian", "localhost/library/debian", "localhost/debian",
    "LOCALDOMAIN/library/debian", "LOCALDOMAIN/debian", "docker.io/docker/docker", "docker.io/library/debian",
    "docker.io/debian", "index.docker.io/docker/docker", "index.docker.io/library/debian", "index.docker.io/debian",
    "127.0.0.1:5000/docker/docker", "127.0.0.1:5000/library/debian", "127.0.0.1:5000/debian", "192.168.0.1",
    "192.168.0.1:80", "192.168.0.1:8/debian", "192.168.0.2:25000/debian",
    "thisisthesongthatneverendsitgoesonandonandonthisisthesongthatnev", "[fc00::1]:5000/docker",
    "[fc00::1]:5000/docker/docker", "[fc00:1:2:3:4:5:6:7]:5000/library/debian",
    "docker.io/1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a", "Docker/docker", "DOCKER/docker",
    "docker-rules/docker", "docker---rules/docker", "doc/docker", "d/docker", "jess/t", "dock__er/docker",
]
INVALID_NAMES = [
    "https://github.com/docker/docker", "docker/Docker", "-docker", "-docker/docker", "-docker.io/docker/docker",
    "docker///docker", "docker.io/docker/Docker", "docker.io/docker///docker", "[fc00::1]", "[fc00::1]:5000",
    "fc00::1:5000/debian", "[fe80::1%eth0]:5000/debian", "[2001:db8:3:4::192.0.2.33]:5000/debian",
    "1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a", "docker-/docker", "-docker-/docker",
    "____/____", "_docker/_docker", "dock..er/docker", "dock_.er/docker", "dock-.er/docker", "docker/",
    "this_is_not_a_valid_namespace_because_its_lenth_is_greater_than_255_" * 4 + "/docker",
]


@pytest.mark.parametrize("text", VALID_NAMES)
def test_normalized_valid_names(text):
    parse_normalized(text)


@pytest.mark.parametrize("text", INVALID_NAMES)
def test_normalized_invalid_names(text):
    with pytest.raises(InvalidReference):
        parse_normalized(text)


@pytest.mark.parametrize("path,familiar,full,ambiguous,domain", [
    ("fooo", "localhost/fooo", "localhost/fooo", None, "localhost"),
    ("fooo/bar", "LOCALDOMAIN/fooo/bar", "LOCALDOMAIN/fooo/bar", None, "LOCALDOMAIN"),
    ("fooo/bar", "fooo/bar", "docker.io/fooo/bar", "index.docker.io/fooo/bar", "docker.io"),
    ("library/ubuntu", "ubuntu", "docker.io/library/ubuntu", "library/ubuntu", "docker.io"),
    ("other/library", "other/library", "docker.io/other/library", None, "docker.io"),
    ("private/moonbase", "127.0.0.1:8000/private/moonbase", "127.0.0.1:8000/private/moonbase", None, "127.0.0.1:8000"),
    ("privatebase", "example.com/privatebase", "example.com/privatebase", None, "example.com"),
    ("privatebasee", "example.com:8000/privatebasee", "example.com:8000/privatebasee", None, "example.com:8000"),
    ("library/ubuntu-12.04-base", "ubuntu-12.04-base", "docker.io/library/ubuntu-12.04-base",
     "index.docker.io/library/ubuntu-12.04-base", "docker.io"),
    ("library/foo", "foo", "docker.io/library/foo", "docker.io/foo", "docker.io"),
    ("library/foo/bar", "library/foo/bar", "docker.io/library/foo/bar", None, "docker.io"),
    ("bar", "Foo/bar", "Foo/bar", None, "Foo"),
])
def test_repository_info(path, familiar, full, ambiguous, domain):
    for text in filter(None, (familiar, full, ambiguous)):
        ref = parse_normalized(text)
        assert (ref.path, ref.familiar_name, ref.name, ref.domain) == (path, familiar, full, domain)


def test_tag_and_digest():
    short = "busybox:latest@sha256:86e0e091d0da6bde2456dbb48306f3956bbeb2eae1b5b9a43045843f69fe4aaa"
    ref = parse_normalized(short)
    assert str(ref) == "docker.io/library/" + short
    assert ref.familiar() == short
    assert ref.pull_ref == ref.digest


def test_parse_image_defaults():
    assert str(parse_image("busybox")) == "docker.io/library/busybox:latest"
    assert str(parse_image("host:5000/team/app:1.2")) == "host:5000/team/app:1.2"
    assert str(parse_image(f"app@{F64}")) == f"docker.io/library/app@{F64}"
    assert parse_image("busybox").familiar() == "busybox:latest"
    assert parse_image("localhost/app").domain == "localhost"


def test_uppercase_familiar_name_is_one_sentence():
    with pytest.raises(InvalidReference, match=r"^invalid reference format: repository name must be lowercase$"):
        parse_image("Busybox")


def test_identifier_is_not_a_name():
    with pytest.raises(InvalidReference, match="cannot specify 64-byte hexadecimal strings"):
        parse_normalized("f" * 64)
