"""swarm.api.gotemplate: Go's text/template subset, outputs as Go prints them."""
from __future__ import annotations

from dataclasses import dataclass

import pytest

from swarm.api.gofmt import go_str, sprintf
from swarm.api.gotemplate import TemplateError, compile_template

DATA = {"Name": "web", "Labels": {"b": "2", "a": "1"}, "Ports": [80, 443], "N": 3, "Empty": [], "Nil": None,
        "Spec": {"Mode": {"Replicated": {"Replicas": 2}}}}


def render(text: str, data=DATA, **kwargs) -> str:
    return compile_template(text, **kwargs).render(data)


@pytest.mark.parametrize("text, want", [
    ("plain text", "plain text"),
    ("{{.Name}}", "web"),
    ("{{.}}", go_str(DATA)),
    ("{{.Spec.Mode.Replicated.Replicas}}", "2"),
    ("{{ .Name | upper }}", "WEB"),
    ("{{lower \"AbC\"}} {{title \"hello big-world\"}}", "abc Hello Big-World"),
    ("{{json .Labels}}", '{"b":"2","a":"1"}'),
    ("{{json \"<&>\"}}", '"<&>"'),                     # docker turns HTML escaping off
    ('{{join (split "a,b,c" ",") "-"}}', "a-b-c"),
    ("{{truncate .Name 2}}|{{truncate .Name 9}}", "we|web"),
    ("[{{pad .Name 1 2}}][{{pad \"\" 1 2}}]", "[ web  ][]"),
    ("{{len .Ports}} {{len .Name}} {{len .Labels}}", "2 3 2"),
    ('{{index .Labels "a"}}[{{index .Labels "zz"}}] {{index .Ports 1}}', "1[] 443"),
    ("{{range $k, $v := .Labels}}{{$k}}={{$v}};{{end}}", "a=1;b=2;"),   # maps range in key order
    ("{{range .Ports}}<{{.}}>{{end}}", "<80><443>"),
    ("{{range $i, $p := .Ports}}{{$i}}:{{$p}} {{end}}", "0:80 1:443 "),
    ("{{range .Empty}}x{{else}}none{{end}}", "none"),
    ("{{range .Nil}}x{{else}}nil{{end}}", "nil"),
    ("{{range .Ports}}{{$.Name}}{{end}}", "webweb"),
    ("{{if .N}}yes{{else}}no{{end}} {{if .Empty}}yes{{else}}no{{end}}", "yes no"),
    ("{{if eq .N 1}}one{{else if eq .N 3 4}}three{{else}}other{{end}}", "three"),
    ("{{if and (gt .N 1) (lt .N 5) (ne .Name \"x\")}}in{{end}}", "in"),
    ("{{or .Nil .Name}} {{and .N .Empty}} {{not .Nil}}", "web [] true"),
    ("{{with .Labels}}{{.a}}{{end}}{{with .Nil}}x{{else}}-{{end}}", "1-"),
    ("{{$x := .N}}{{$x}}{{$x = 5}}{{$x}}", "35"),
    ("{{(index .Spec \"Mode\").Replicated.Replicas}}", "2"),
    ("{{printf \"%-5s|%4d|%03d|%q|%v|%s\" .Name .N .N .Name .Ports .Labels}}", 'web  |   3|003|"web"|[80 443]|map[a:1 b:2]'),
    ("{{.Name | printf \"<%s>\"}}", "<web>"),
    ("{{println .Name .N}}", "web 3\n"),
    ("{{print .N .N \"x\" .N}}", "3 3x3"),
    ("{{.Nil}}", "<no value>"),
    ("a  {{- .Name -}}  \n b", "awebb"),
    ("a {{-3}} b", "a -3 b"),                              # "{{-3" is a number, not a trim marker
    ("x{{/* a comment */}}y {{- /* trimmed */ -}} z", "xyz"),
    ("{{`raw \\n`}}{{\"\\tq\\u00e9\"}}", "raw \\n\tqé"),
    ("{{true}} {{1.5}} {{0x10}} {{'a'}}", "true 1.5 16 97"),
])
def test_render(text: str, want: str) -> None:
    assert render(text) == want


def test_floats_print_as_go() -> None:
    assert [go_str(v) for v in (1.5, 3.0, 123456.0, 1234567.0, 0.0001, 0.00001)] == \
        ["1.5", "3", "123456", "1.234567e+06", "0.0001", "1e-05"]


def test_objects_are_structs() -> None:
    @dataclass
    class Row:
        ID: str
        Count: int
    assert render("{{.ID}}/{{.Count}} {{json .}}", Row("abc", 2)) == 'abc/2 {"ID":"abc","Count":2}'
    with pytest.raises(TemplateError, match=r"unknown field \.Nope"):
        render("{{.Nope}}", Row("abc", 2))


def test_missing_key_zero_reads_empty() -> None:
    assert render("[{{.Labels.zz}}]", missing_key="zero") == "[]"


@pytest.mark.parametrize("text, message", [
    ("{{.Foo}}", "unknown field .Foo"),
    ("{{.Spec.Mode.Global}}", "unknown field .Spec.Mode.Global"),
    ("{{.Name.X}}", "unknown field .Name.X: string has no fields"),
    ("{{.Nil.X}}", "can't read field .Nil.X: .Nil is nil"),
    ("{{$y}}", "undefined variable: $y"),
    ("{{upper 3}}", "wrong type for value in upper: expected string, got int"),
    ("{{truncate .Name}}", "wrong number of args for truncate: want 2 got 1"),
    ("{{.Name 3}}", "can't give argument to non-function .Name"),
    ("{{range .Name}}{{end}}", "range can't iterate over web"),
    ("{{eq .N .Name}}", "incompatible types for comparison: int and string"),
    ("{{index .Ports 7}}", "index out of range: 7"),
])
def test_render_errors(text: str, message: str) -> None:
    with pytest.raises(TemplateError) as info:
        render(text)
    assert str(info.value) == message


@pytest.mark.parametrize("text, message", [
    ("{{nosuch .}}", 'function "nosuch" not defined'),
    ("{{.Name | nosuch}}", 'function "nosuch" not defined'),
    ("{{if .N}}x", "unexpected end of the template: {{if}} has no {{end}}"),
    ("x{{end}}", "unexpected {{end}}"),
    ("{{else}}", "unexpected {{else}}"),
    ("{{.Name", "unclosed action: a {{ has no matching }}"),
    ('{{"abc}}', "unterminated quoted string"),
    ("{{}}", "missing value for command"),
    ("{{if}}{{end}}", "missing value for if"),
    ("{{(.Name}}", "unclosed left paren"),
    ("{{.Name |}}", "missing command after |"),
    ("{{template \"x\"}}", "{{template}} is not supported here"),
    ("{{/* open", "unclosed comment"),
    ("{{ # }}", "unexpected '#' in an action"),
])
def test_compile_errors(text: str, message: str) -> None:
    with pytest.raises(TemplateError) as info:
        compile_template(text)
    assert str(info.value) == message


def test_template_renders_many_values() -> None:
    tmpl = compile_template("{{.Name}}")
    assert [tmpl.render({"Name": n}) for n in ("a", "b")] == ["a", "b"]


def test_funcs_replace_docker_functions() -> None:
    # service templates have Go's builtins and their own functions, not docker's --format ones
    with pytest.raises(TemplateError, match='function "upper" not defined'):
        compile_template("{{upper .}}", funcs={})
    assert compile_template("{{len .}}", funcs={}).render("abc") == "3"


@pytest.mark.parametrize("args, want", [
    (("%s %s", "a"), "a %!s(MISSING)"),
    (("%s", "a", 1), "a%!(EXTRA int=1)"),
    (("%d", "x"), "%!d(string=x)"),
    (("%5.1s|%-4d|%x|%t|%%", "abc", -2, 255, True), "    a|-2  |ff|true|%"),
    (("%.2f %+d", 3.14159, 4), "3.14 +4"),
])
def test_sprintf(args, want: str) -> None:
    assert sprintf(*args) == want
