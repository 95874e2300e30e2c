"""placeholder"""
import typer
export_app = typer.Typer()
run_app = typer.Typer()
train_app = typer.Typer()
