"""swarm/cli/transfer_view.py: what `image pull|push` print (docker's jsonmessage display), and the
checks `swarm login` makes before asking anything."""
from swarm.cli.transfer_view import (TransferView, human_size, layer_line, progress_text, pull_footer, pull_header,
                                     push_footer)


def test_human_size_is_go_units_four_digits():
    assert [human_size(n) for n in (0, 999, 1000, 1234567, 3_400_000, 10**12)] == \
        ["0B", "999B", "1kB", "1.235MB", "3.4MB", "1TB"]


def test_progress_text_is_dockers_bar_and_counts():
    assert progress_text(1_200_000, 3_400_000, 200) == "[" + "=" * 17 + ">" + " " * 33 + "]    1.2MB/3.4MB"
    assert progress_text(1_200_000, 3_400_000, 80) == "   1.2MB/3.4MB"          # no bar on a narrow terminal
    assert progress_text(3_400_000, 3_400_000, 200).startswith("[" + "=" * 50 + ">] ")
    assert progress_text(500, 0, 200) == "    500B" and progress_text(0, 0, 200) == ""
    assert progress_text(5, 3, 80) == "      5B"                               # a wonky total is not shown


def test_layer_lines():
    assert layer_line({"id": "a1", "status": "Downloading", "current": 1000, "total": 2000}, 80) == \
        "a1: Downloading      1kB/2kB"
    assert layer_line({"id": "a1", "status": "Pull complete", "current": 2000, "total": 2000}, 200) == \
        "a1: Pull complete"


def test_plain_output_prints_each_step_once():
    view = TransferView(terminal=False)
    assert view.feed({"log": [["a1", "Pulling fs layer"], ["a1", "Verifying Checksum"]],
                      "layers": [{"id": "a1", "status": "Downloading", "current": 1, "total": 2}]}) == \
        "a1: Pulling fs layer\na1: Verifying Checksum\n"
    assert view.feed({"log": [], "layers": []}) == ""


def test_terminal_output_redraws_the_layer_block_in_place():
    view = TransferView(terminal=True, width=80)
    first = view.feed({"log": [], "layers": [{"id": "a1", "status": "Pulling fs layer"}]})
    assert first == "\x1b[2K\ra1: Pulling fs layer\n"
    second = view.feed({"log": [], "layers": [{"id": "a1", "status": "Downloading", "current": 1000, "total": 2000},
                                              {"id": "b2", "status": "Already exists"}]})
    assert second == "\x1b[1A\x1b[2K\ra1: Downloading      1kB/2kB\n\x1b[2K\rb2: Already exists\n"
    assert view.feed({"layers": [{"id": "a1", "status": "Pull complete"}, {"id": "b2", "status": "Already exists"}]}) \
        .startswith("\x1b[2A")


def test_headers_and_footers_as_docker():
    assert pull_header("latest", "library/busybox", False) == \
        "Using default tag: latest\nlatest: Pulling from library/busybox\n"
    assert pull_header("1.2", "team/app", True) == "1.2: Pulling from team/app\n"
    result = {"digest": "sha256:ab", "fresh": True, "ref": "docker.io/library/busybox:latest"}
    assert pull_footer(result, "busybox:latest") == ("Digest: sha256:ab\nStatus: Downloaded newer image for "
                                                     "busybox:latest\ndocker.io/library/busybox:latest\n")
    assert "Status: Image is up to date for busybox:latest\n" in pull_footer({**result, "fresh": False},
                                                                             "busybox:latest")
    assert push_footer({"tag": "1.2", "digest": "sha256:ab", "size": 527}) == "1.2: digest: sha256:ab size: 527\n"


def test_login_refuses_dockers_bad_flag_combinations_before_asking(run):
    both = run("login", "-u", "u", "-p", "x", "--password-stdin", "reg:5000", input="pw\n")
    assert both.exit_code == 1 and "Error: --password and --password-stdin are mutually exclusive" in both.output
    assert "WARNING! Using --password via the CLI is insecure. Use --password-stdin." in both.output
    nouser = run("login", "--password-stdin", "reg:5000", input="pw\n")
    assert nouser.exit_code == 1 and "Error: Must provide --username with --password-stdin" in nouser.output


def test_registry_flags_are_checked_as_dockerd(run):
    bad = run("daemon", "--insecure-registry", "http://reg:5000")
    assert bad.exit_code == 2 and "insecure registry http://reg:5000 should not contain '://'" in bad.output
    bad = run("init", "--advertise-addr", "127.0.0.1", "--registry-mirror", "ftp://m")
    assert bad.exit_code == 2 and "invalid mirror: unsupported scheme 'ftp'" in bad.output
