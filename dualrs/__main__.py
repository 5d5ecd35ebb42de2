from dualrs.cli import main

main()
